"""A real embedding model for the embeddings role: all-MiniLM-L6-v2, converted to GGUF from its
PyPI wheel, served by its own worker beside SmolLM2 for chat. Its vectors are the model's own
(384-d, unit length, pooled as its GGUF declares) and rank related code above the rest."""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import llama_cpp
import openai
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

from scripts.make_embedding_gguf import fetch_embedding_model
from tests.support.daemons import DaemonFactory, wait_for

MINILM = "all-minilm-l6-v2-f16"  # the id the daemon derives from the file name

ADD = "def add(a, b): return a + b"
SUM = "def sum_two(x, y): return x + y"
WEATHER = "The weather in Paris is sunny today"
READ = "with open(path) as f:\n    data = f.read()"
LOAD = "def load_text(filename):\n    return open(filename).read()"
SORT = "items.sort(key=lambda item: item.price)"
ORDER = "sorted(products, key=lambda p: p.cost)"
RECIPE = "Whisk the eggs with sugar until pale, then fold in the flour."
# (a snippet, one that does the same thing, one about something else)
TRIPLES = [(ADD, SUM, WEATHER), (READ, LOAD, RECIPE), (SORT, ORDER, WEATHER), (SUM, ADD, RECIPE)]


@pytest.fixture(scope="session")
def minilm() -> Path:
    return fetch_embedding_model()


def _declaring(source: Path, out: Path, pooling: int) -> Path:
    """A copy of `source` whose metadata declares another pooling type, by the gguf package."""
    reader = gguf.GGUFReader(source)
    declared = {"bert.pooling_type": MetadataDetails(gguf.GGUFValueType.UINT32, pooling)}
    copy_with_new_metadata(reader, gguf.GGUFWriter(out, "bert"), declared, [])
    return out


def _llama_embedding(model: Path, text: str) -> list[float]:
    """The vector llama.cpp itself gives, pooled as the file declares."""
    llm = llama_cpp.Llama(
        model_path=str(model),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
        n_threads=1,
        verbose=False,
    )
    return list(llm.embed(text, normalize=True))


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # both are unit length


def test_embeddings_come_from_the_embedding_model_and_rank_code_by_meaning(
    models: dict[str, Path], minilm: Path, start_daemon: DaemonFactory
) -> None:
    daemon = start_daemon(models["smollm2"], ASSISTANT_EMBEDDINGS_MODEL=str(minilm))
    status = wait_for(daemon, lambda s: s["roles"]["embeddings"]["state"] == "serving")
    embeddings = status["roles"]["embeddings"]
    assert embeddings["model"] == MINILM and embeddings["served_by"] == "embeddings"
    assert status["roles"]["chat"]["model"] == "smollm2-135m-instruct-q4_1"

    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0, timeout=120)
    texts = sorted({text for triple in TRIPLES for text in triple})
    answer = api.embeddings.create(model="assistantd-embed", input=texts)
    assert answer.model == MINILM and [d.index for d in answer.data] == list(range(len(texts)))
    vectors = {text: d.embedding for text, d in zip(texts, answer.data, strict=True)}
    for vector in vectors.values():
        assert len(vector) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-4)

    for anchor, related, unrelated in TRIPLES:
        close = _cosine(vectors[anchor], vectors[related])
        far = _cosine(vectors[anchor], vectors[unrelated])
        print(f"\n{close:.3f} {anchor!r} ~ {related!r}\n{far:.3f} {anchor!r} ~ {unrelated!r}")
        assert close > far + 0.2
    # Asked one at a time, a text gets the vector it got in the batch.
    alone = api.embeddings.create(model=MINILM, input=ADD).data[0].embedding
    assert _cosine(alone, vectors[ADD]) > 0.9999


def test_the_pooling_a_model_declares_is_the_one_used(
    models: dict[str, Path], minilm: Path, start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The same weights declaring CLS pooling: the daemon's vector is llama.cpp's CLS vector,
    not the mean one it would have forced."""
    cls_copy = _declaring(minilm, tmp_path / "minilm-cls.gguf", llama_cpp.LLAMA_POOLING_TYPE_CLS)
    daemon = start_daemon(models["smollm2"], ASSISTANT_EMBEDDINGS_MODEL=str(cls_copy))
    wait_for(daemon, lambda s: s["roles"]["embeddings"]["state"] == "serving")
    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0, timeout=120)
    served = api.embeddings.create(model="assistantd-embed", input=ADD).data[0].embedding
    cls_vector, mean_vector = _llama_embedding(cls_copy, ADD), _llama_embedding(minilm, ADD)
    print(f"\nCLS copy: {_cosine(served, cls_vector):.5f} to CLS, "
          f"{_cosine(served, mean_vector):.5f} to mean")  # fmt: skip
    assert _cosine(served, cls_vector) > 0.9999
    assert _cosine(served, mean_vector) < 0.99
