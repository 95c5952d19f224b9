"""Nothing reaches the network by default: the main paths run with sockets disabled.

Covers, in a fresh interpreter whose socket module refuses every connection
and name lookup: ``import slmbook``, a tiny training run, ``generate``, both
retriever backends (fit, search, save and load) and ``pretrained()``. A
socket call anywhere on these paths fails the test, naming the call.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import socket

    calls = []

    def refuse(name):
        def blocked(*args, **kwargs):
            calls.append(name)
            raise OSError(f"network disabled in this test: socket.{name} was called")
        return blocked

    socket.socket.connect = refuse("socket.connect")
    socket.socket.connect_ex = refuse("socket.connect_ex")
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")
    socket.gethostbyname = refuse("gethostbyname")

    import sys
    import torch

    torch.set_num_threads(1)
    import slmbook
    from slmbook.checkpoints import pretrained
    from slmbook.model import GPT, GPTConfig
    from slmbook.retrieval import TfidfRetriever
    from slmbook.tokenizers import CharTokenizer

    text = slmbook.load_corpus()[:5000]
    tok = CharTokenizer.fit(text)
    ids = torch.tensor(tok.encode(text))
    train_ids, val_ids = slmbook.train_val_split(ids)
    slmbook.set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    slmbook.train(model, train_ids, val_ids, max_steps=3, batch_size=2, eval_every=2,
                  eval_batches=1, progress=False)
    out = slmbook.generate(model, tok, "The ", 5, generator=torch.Generator().manual_seed(0))
    assert out.startswith("The ") and len(out) >= 5, out

    docs = ["the with statement", "a for loop iterates", "exceptions are raised"]
    for backend in ("sklearn", "scratch"):
        r = TfidfRetriever(backend=backend).fit(docs)
        assert r.search("for loop", k=1)[0].passage_id == "1"
        path = sys.argv[1] + f"/{backend}.npz"
        assert TfidfRetriever.load(r.save(path)).search("for loop", k=1) == r.search("for loop", k=1)

    lm, lm_tok = pretrained()
    assert slmbook.generate(lm, lm_tok, "The ", 5, generator=torch.Generator().manual_seed(0))
    assert calls == [], calls
    print("offline ok")
    """
)


@pytest.mark.slow
def test_main_paths_run_without_network(tmp_path):
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "0", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("offline ok")


def test_refusing_sockets_is_detected(tmp_path):
    """The guard itself works: a connection attempt under it is refused and recorded."""
    probe = SCRIPT.split("import sys\n")[0] + textwrap.dedent(
        """
        try:
            socket.create_connection(("example.org", 80), timeout=1)
        except OSError as err:
            print(err)
        print(calls)
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "network disabled in this test: socket.create_connection" in out.stdout
    assert "['create_connection']" in out.stdout
