/* The widget manager (embed.js) typesets widget text with MathJax 2's API,
   MathJax.Hub.Queue(["Typeset", MathJax.Hub, node]); the book loads MathJax 3,
   which has no Hub. This maps that one call onto MathJax 3's typesetPromise,
   waiting for MathJax to finish loading when it has not yet. */
(function () {
  "use strict";
  function typeset(node) {
    var mj = window.MathJax;
    if (mj && typeof mj.typesetPromise === "function") {
      var ready = (mj.startup && mj.startup.promise) || Promise.resolve();
      ready.then(function () { return mj.typesetPromise(node ? [node] : undefined); })
        .catch(function (err) { console.warn("MathJax could not typeset a widget:", err); });
    } else {
      window.addEventListener("load", function () { typeset(node); }, { once: true });
    }
  }
  var hub = {
    Queue: function () {
      Array.prototype.forEach.call(arguments, function (job) {
        if (Array.isArray(job) && job[0] === "Typeset") { typeset(job[2]); }
      });
    }
  };
  // Loaded after MathJax's configuration object, which MathJax 3 keeps as its global.
  if (window.MathJax && !window.MathJax.Hub) { window.MathJax.Hub = hub; }
})();
