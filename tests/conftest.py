import os

import pytest

# The project is flat scripts at the repository root: pytest.ini's `pythonpath = .` makes them importable here.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "data", "dt_ratings.jsonl.gz")  # the real ratings, shipped with the repository


@pytest.fixture(scope="session")
def default():
    """The embedded default model and tokenizer (SmolLM2-135M-Instruct), loaded once for the whole run, on CPU."""
    import checkpoint

    return checkpoint.load(None, device="cpu")


@pytest.fixture(scope="session")
def hf_default():
    """transformers' own reading of the same GGUF file: the oracle for the default model and its tokenizer."""
    transformers = pytest.importorskip("transformers", reason="transformers is the oracle (requirements-dev.txt)")
    import checkpoint
    import torch

    path = checkpoint.default_model_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                           dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return hf, tok
