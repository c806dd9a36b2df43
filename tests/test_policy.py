"""Profiles, the monitor's windows and the shift policy, on their own (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistantd.control.monitor import Monitor, Window, percentile
from assistantd.control.policy import decide
from assistantd.control.stats import RequestRecord
from assistantd.errors import ProfileError
from assistantd.planning import profiles
from assistantd.planning.planner import Candidate
from assistantd.planning.profiles import Profile, parse
from assistantd.settings import load_settings

MiB = 1024**2


def rung(model: str, file_mib: int, tok_s: float, *, measured: bool = False) -> Candidate:
    return Candidate(
        model=model, quant="Q4_K_M", placement="cpu", n_gpu_layers=0, n_ctx=4096,
        file_bytes=file_mib * MiB, file_bytes_estimated=False, ram_bytes=2 * file_mib * MiB,
        vram_bytes=0, predicted_tok_s=tok_s, speed_measured=measured, quality=50.0, fits=True,
    )  # fmt: skip


def window(decode: float | None, ttft: float | None = None, n: int = 5) -> Window:
    return Window(60, n, n if ttft else 0, n if decode else 0, ttft, ttft, decode, decode, 1.0)


def profile(**shift: float) -> Profile:
    text = "[targets]\ndecode_tok_s = 30\nttft_p95_ms = 1000\n[shift]\n" + "".join(
        f"{k} = {v}\n" for k, v in {"cooldown_s": 0, "min_requests": 5, **shift}.items()
    )
    return parse(text, Path("p.toml"), "p")


BIG, MID, SMALL = rung("7b", 4000, 20), rung("3b", 2000, 40), rung("1b", 1000, 80)
LADDER = [BIG, MID, SMALL]


def test_sustained_slow_decode_shifts_down_one_rung_with_the_reason() -> None:
    decision = decide(profile(), LADDER, BIG, window(decode=18.0), since_last_shift_s=100)
    assert decision is not None and decision.target is MID and decision.direction == "down"
    assert decision.reason == "median decode 18.0 tok/s < 30 tok/s over 60 s: 7b Q4_K_M → 3b Q4_K_M"


def test_slow_ttft_shifts_down_too() -> None:
    decision = decide(profile(), LADDER, MID, window(50.0, ttft=2400), since_last_shift_s=100)
    assert decision is not None and decision.target is SMALL
    assert "p95 TTFT 2.40 s > 1.00 s over 60 s" in decision.reason


def test_too_few_requests_or_within_cooldown_is_no_evidence() -> None:
    assert decide(profile(), LADDER, BIG, window(10.0, n=4), since_last_shift_s=100) is None
    slow = window(10.0)
    assert decide(profile(cooldown_s=60), LADDER, BIG, slow, since_last_shift_s=59) is None
    assert decide(profile(cooldown_s=60), LADDER, BIG, slow, since_last_shift_s=61) is not None


def test_at_the_smallest_rung_it_says_so_instead_of_shifting() -> None:
    decision = decide(profile(), LADDER, SMALL, window(10.0), since_last_shift_s=100)
    assert decision is not None and decision.target is None
    assert "1b Q4_K_M is the smallest rung" in decision.reason


def test_shifts_up_only_with_predicted_headroom_beyond_the_hysteresis() -> None:
    # At 3b: 80 tok/s. 7b is twice the file → predicted 40 ≥ 30 × 1.2: up, to the best rung.
    up = decide(profile(), LADDER, MID, window(80.0), since_last_shift_s=100)
    assert up is not None and up.target is BIG and up.direction == "up"
    assert "headroom" in up.reason
    # 66 tok/s → 7b predicted 33: meets 30 but not 36, so it stays (no flapping).
    assert decide(profile(), LADDER, MID, window(66.0), since_last_shift_s=100) is None
    # A speed measured on this machine beats the prediction.
    slow_big = rung("7b", 4000, 25, measured=True)
    assert (
        decide(profile(), [slow_big, MID, SMALL], MID, window(80.0), since_last_shift_s=100) is None
    )


def test_up_respects_ttft_headroom_too() -> None:
    # TTFT p95 500 ms at 3b → 1000 ms predicted at 7b: over 1000/1.2.
    assert decide(profile(), LADDER, MID, window(80.0, ttft=500), since_last_shift_s=100) is None


def record(
    model: str, *, prompt: int, ttft: float, decode: float, tokens: int = 32
) -> RequestRecord:
    return RequestRecord(
        endpoint="chat",
        outcome="ok",
        queue_ms=5.0,
        prompt_tokens=prompt,
        completion_tokens=tokens,
        service_ttft_ms=ttft,
        decode_tok_s=decode,
        model=model,
    )


def test_monitor_windows_judge_only_what_speaks_to_the_targets() -> None:
    monitor = Monitor(reference_prompt_tokens=1000)
    monitor.observe(record("a", prompt=500, ttft=400, decode=20))  # → 800 ms at 1000 tokens
    monitor.observe(record("a", prompt=2000, ttft=1000, decode=30))  # → 500 ms
    monitor.observe(record("a", prompt=10, ttft=30, decode=40))  # too short to say
    monitor.observe(record("a", prompt=900, ttft=900, decode=99, tokens=3))  # too few tokens
    monitor.observe(record("b", prompt=1000, ttft=5000, decode=1))
    win = monitor.window(60, model="a")
    assert win.requests == 4 and win.ttft_samples == 3 and win.decode_samples == 3
    assert win.ttft_p95_ms == 1000 and win.decode_p50_tok_s == 30
    assert monitor.window(60).requests == 5
    text = monitor.prometheus().decode()
    assert 'assistantd_requests_total{endpoint="chat",outcome="ok"} 5.0' in text
    assert "assistantd_time_to_first_token_seconds_bucket" in text
    assert "assistantd_decode_tokens_per_second_count 5.0" in text


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95 and percentile(values, 50) == 50
    assert percentile([], 95) is None and percentile([7.0], 95) == 7.0


def test_a_user_copy_overrides_the_shipped_profile_and_paths_work(tmp_path: Path) -> None:
    assert profiles.resolve("speed", tmp_path) == profiles.SHIPPED_DIR / "speed.toml"
    mine = profiles.user_dir(tmp_path) / "speed.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text('prefer = "speed"\nn_ctx = 2048\n')
    loaded = profiles.load("speed", tmp_path)
    assert loaded.path == mine and loaded.n_ctx == 2048
    assert profiles.load(str(mine), Path("/nowhere")).n_ctx == 2048
    with pytest.raises(ProfileError, match="no profile named 'fast'.*balanced, quality, speed"):
        profiles.load("fast", tmp_path)
    with pytest.raises(ProfileError, match="not a profile name"):
        profiles.load("../../etc/passwd", tmp_path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('prefer = "fast"\n', "p.toml:1: prefer"),
        ("\n\n[shift]\ncooldown_s = -1\n", "p.toml:4: shift.cooldown_s"),
        ("[targets]\nttft = 3\n", "p.toml:2: targets.ttft: unknown key"),
        ("name = 3\n", "p.toml:1: unknown key 'name'"),
        ("[memory]\nram_budget = 'lots'\n", "p.toml:2: memory.ram_budget"),
        ("x = = 1\n", "p.toml:1: not valid TOML"),
    ],
)
def test_profile_errors_name_file_and_line(text: str, where: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse(text, Path("p.toml"), "p")
    assert caught.value.message.startswith(where), caught.value.message


def test_explicit_settings_win_over_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_N_CTX", "2048")
    settings = load_settings(["--prefer", "speed", "--min-tok-s", "3", "--ram-budget", "1GiB"])
    profile = profiles.active_profile(settings)
    assert profile.name == "balanced" and profile.n_ctx == 2048 and profile.prefer == "speed"
    assert profile.targets.decode_tok_s == 3 and profile.memory.ram_budget == 1024**3
    assert profile.memory.ram_reserve == 2 * 1024**3  # not given: the profile's
