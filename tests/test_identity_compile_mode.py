"""compile_mode identifies a cell where one was chosen, and leaves older rows' ids alone."""
from bench.store import identity

BASE = dict(model="gpt2", weights="random", dtype="float32", device="cuda", gpu="NVIDIA H200", batch=1,
            prompt_len=64, new_tokens=32, cache="static", attn="sdpa", sdpa_backend="auto", compile="auto", seed=0)


def test_a_chosen_compile_mode_is_another_cell():
    plain = identity.cell_id(BASE)
    assert identity.cell_id({**BASE, "compile_mode": "auto"}) == plain
    assert identity.cell_id({**BASE, "compile_mode": ""}) == plain
    tuned = identity.cell_id({**BASE, "compile_mode": "max-autotune-no-cudagraphs"})
    assert tuned != plain
    assert identity.cell_id({**BASE, "compile_mode": "reduce-overhead"}) not in (plain, tuned)
