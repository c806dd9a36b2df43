#!/usr/bin/env python3
"""Run llama.cpp's own server test suite (tools/server/tests, pytest) against assistantd.

Why: assistantd claims llama-server compatibility (/completion, /infill, /props, /tokenize...);
llama.cpp's suite is the reference for what llama-server clients expect. The suite starts the
binary named by LLAMA_SERVER_BIN_PATH with llama-server flags and pulls tiny models from
Hugging Face; here a wrapper translates those flags to an assistantd command line and maps
every model to a local file (SmolLM2, or a FIM copy of it for the infill tests), so the suite
runs offline. The suite comes from the installed llama-cpp-python's sdist (vendor/llama.cpp).

    .venv/bin/python -m scripts.llama_suite                       # default files vs assistantd
    .venv/bin/python -m scripts.llama_suite --files test_basic.py -k props --list-failures
    .venv/bin/python -m scripts.llama_suite --llama-server /path/to/llama-server
    .venv/bin/python -m scripts.llama_suite --both /path/to/llama-server   # side by side
    .venv/bin/python -m scripts.llama_suite serve --port 8080 --hf-repo x/y   # the wrapper itself

Prints a markdown table (test file | passed | failed | errors | skipped); the pytest log and the
junit xml stay in the temp dir it prints; exits 1 when any test failed. The default files take
about 13 minutes on 2 cores. The wrapper sets ASSISTANT_ANY_MODEL_NAME (llama-server answers
any "model" name) and keeps assistantd's state under ~/.cache/assistantd/llama-suite/.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python scripts/llama_suite.py`
    sys.path.insert(0, str(ROOT))

CACHE = Path.home() / ".cache" / "assistantd" / "llama-suite"
SUITE_SUBDIR = "vendor/llama.cpp/tools/server/tests"
TEMPLATES_SUBDIR = "vendor/llama.cpp/models/templates"
DEFAULT_FILES = [f"test_{name}.py" for name in (
    "basic", "security", "ctx_shift", "infill", "embedding", "completion", "chat_completion",
    "tool_call",
)]  # fmt: skip
# Import name -> distribution name, for the suite's requirements.
DISTS = {"prometheus_client": "prometheus-client", "huggingface_hub": "huggingface_hub"}
MODEL_FLAGS = {"-m", "--model", "-mu", "--model-url", "-hf", "-hfr", "--hf-repo", "-hff",
               "--hf-file"}  # fmt: skip
FIM_HINTS = ("infill", "fim", "coder")
# Where a checkout may already hold the sdist or its extracted tree (first places to look).
LOOK_FIRST = (Path("/tmp/lcp"), Path("/tmp/lcp-src"))
ENV_MODEL, ENV_FIM = "LLAMA_SUITE_MODEL", "LLAMA_SUITE_FIM_MODEL"
Counts = dict[str, list[int]]  # file -> [passed, failed, errors, skipped]


# ---------------------------------------------------------------- models


def smollm2() -> Path:
    env = os.environ.get(ENV_MODEL)
    if env:
        return Path(env)
    from scripts import fetch_models

    return fetch_models.fetch(fetch_models.MODELS["smollm2"])


def _write_fim_copy(source: Path, out: Path) -> Path:
    """The tests' own recipe (tests/support/roles.py) when importable, else the same steps."""
    try:
        from tests.support.daemons import FIM_MID, FIM_PRE, FIM_SUF
        from tests.support.roles import write_fim_copy

        return write_fim_copy(source, out, (FIM_PRE, FIM_SUF, FIM_MID))
    except Exception:  # tests/ absent or mid-edit: replicate gguf_new_metadata's call
        tokens = (("fim_pre", "<issue_start>"), ("fim_suf", "<issue_comment>"),
                  ("fim_mid", "<issue_closed>"))  # fmt: skip
        args = [a for name, text in tokens for a in ("--special-token", name, text)]
        subprocess.run(
            [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", *args,
             str(source), str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        return out


def fim_model() -> Path:
    """SmolLM2 with FIM token ids in its metadata, cached (written atomically)."""
    env = os.environ.get(ENV_FIM)
    if env:
        return Path(env)
    target = CACHE / "smollm2-fim.gguf"
    source = smollm2()
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fim-", dir=CACHE) as tmp:
        os.replace(_write_fim_copy(source, Path(tmp) / target.name), target)
    return target


# ---------------------------------------------------------------- wrapper modes


def _takes_value(args: list[str], i: int) -> bool:
    return i + 1 < len(args) and (
        not args[i + 1].startswith("-") or re.fullmatch(r"-\d+(\.\d+)?", args[i + 1]) is not None
    )


def parse_flags(args: list[str]) -> list[tuple[str, str | None]]:
    """llama-server argv as (flag, value) pairs; a flag takes the next token unless it is a flag."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        flag, value = args[i], None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif _takes_value(args, i):
            value, i = args[i + 1], i + 1
        pairs.append((flag, value))
        i += 1
    return pairs


def wants_fim(pairs: list[tuple[str, str | None]]) -> bool:
    named = " ".join(v or "" for f, v in pairs if f in MODEL_FLAGS).lower()
    return any(hint in named for hint in FIM_HINTS)


def assistantd_argv(args: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """assistantd's argv, extra env and the flags it ignored, for a llama-server argv."""
    flags = dict(parse_flags(args))
    out = ["--model", str(fim_model() if wants_fim(parse_flags(args)) else smollm2())]
    env: dict[str, str] = {}
    direct = {"--host": "--host", "--port": "--port", "--threads": "--threads", "-t": "--threads",
              "--alias": "--model-id", "-a": "--model-id"}  # fmt: skip
    handled = set(direct) | MODEL_FLAGS | {"--ctx-size", "-c", "--parallel", "-np", "--api-key",
                                           "--kv-unified", "-kvu", "--cors-origins", "--tools",
                                           "--no-slots", "--temp", "--seed"}  # fmt: skip
    for flag, target in direct.items():
        if flags.get(flag) is not None:
            out += [target, str(flags[flag])]
    parallel = flags.get("--parallel") or flags.get("-np")
    ctx = flags.get("--ctx-size") or flags.get("-c")
    if parallel is not None:
        out += ["--slots", parallel]
    if ctx is not None:  # llama-server's ctx is shared by the slots, unless one pool is unified
        share = 1 if "--kv-unified" in flags or "-kvu" in flags else int(parallel or 1)
        out += ["--n-ctx", str(max(256, int(ctx) // max(1, share)))]
    if flags.get("--api-key"):
        env["ASSISTANT_API_KEY"] = str(flags["--api-key"])
    # llama-server allows every origin unless told (localhost when its tools are on);
    # assistantd allows none unless told, so the wrapper tells it what llama-server would do.
    default_origins = "localhost" if flags.get("--tools") else "*"
    env["ASSISTANT_ALLOWED_ORIGINS"] = str(flags.get("--cors-origins") or default_origins)
    if "--no-slots" in flags:
        env["ASSISTANT_SLOTS_ENDPOINT"] = "false"
    for flag, name in (("--temp", "ASSISTANT_TEMPERATURE"), ("--seed", "ASSISTANT_SEED")):
        if flags.get(flag) is not None and flags[flag] != "-1":
            env[name] = str(flags[flag])
    ignored = [f for f in flags if f not in handled]
    return out, env, ignored


def serve(args: list[str]) -> None:
    """Become assistantd (os.execv: same pid, so the suite's SIGTERM reaches it directly)."""
    argv, extra, ignored = assistantd_argv(args)
    if ignored:
        print(f"llama_suite: ignoring llama-server flags: {' '.join(ignored)}", file=sys.stderr)
    state = CACHE / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    # llama-server answers any "model" name with its one model; assistantd does so when asked.
    env.update(extra, ASSISTANT_ANY_MODEL_NAME="true", ASSISTANT_LOG_LEVEL="warning",
               ASSISTANT_STATE_DIR=str(state / "state"),
               ASSISTANT_CONFIG_DIR=str(state / "config"))  # fmt: skip
    cmd = [sys.executable, "-m", "assistantd", *argv]
    print(f"llama_suite: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execve(sys.executable, cmd, env)


def serve_real(binary: str, args: list[str]) -> None:
    """Exec a real llama-server with Hugging Face model flags replaced by a local file."""
    pairs = parse_flags(args)
    kept = [tok for f, v in pairs if f not in MODEL_FLAGS for tok in (f, v) if tok is not None]
    if any(f in MODEL_FLAGS for f, _ in pairs):  # no model at all = router mode: leave it
        kept = ["--model", str(fim_model() if wants_fim(pairs) else smollm2()), *kept]
    os.execv(binary, [binary, *kept])


def write_wrapper(folder: Path, name: str, mode: list[str]) -> Path:
    path = folder / name
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}} exec "
        f'{shlex.quote(sys.executable)} -m scripts.llama_suite {shlex.join(mode)} "$@"\n'
    )
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------- the suite


def find_suite(explicit: Path | None) -> Path:
    """The suite dir: given, under LOOK_FIRST or the cache, else extracted from the sdist
    (found there, or pip-downloaded into the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version("llama-cpp-python")
    stem = f"llama_cpp_python-{version}"
    bases = [explicit] if explicit else []
    for base in [*bases, *(d / stem / SUITE_SUBDIR for d in (*LOOK_FIRST, CACHE))]:
        if (base / "utils.py").exists():
            return base
    names = (f"{stem}.tar.gz", f"llama-cpp-python-{version}.tar.gz")
    found = [d / n for d in (*LOOK_FIRST, CACHE) for n in names if (d / n).exists()]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
                        "--no-deps", "--dest", str(CACHE), f"llama-cpp-python=={version}"],
                       check=True)  # fmt: skip
        found = [CACHE / n for n in names if (CACHE / n).exists()]
    target = CACHE / stem / "vendor"
    with tarfile.open(found[0]) as archive, tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        members = archive.getmembers()
        top = members[0].name.split("/")[0]
        wanted = (f"{top}/{SUITE_SUBDIR}/", f"{top}/{TEMPLATES_SUBDIR}/")
        chosen = [m for m in members if m.name.startswith(wanted)]
        archive.extractall(tmp, members=chosen, filter="data")
        shutil.rmtree(target, ignore_errors=True)  # a stale, partial copy
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Path(tmp) / top / "vendor", target)
    return CACHE / stem / SUITE_SUBDIR


def ensure_requirements(suite: Path, files: list[str]) -> None:
    """pip-install into this venv only the modules the chosen files (and utils/conftest) import
    that are missing, pinned as the suite's requirements.txt pins them."""
    local = {p.stem for p in suite.rglob("*.py")}
    modules: set[str] = {"pytest"}
    for source in [suite / "utils.py", suite / "conftest.py", *(suite / "unit" / f for f in files)]:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    missing = sorted(m for m in modules - local - set(sys.stdlib_module_names)
                     if importlib.util.find_spec(m) is None)  # fmt: skip
    if not missing:
        return
    pins = {}
    for line in (suite / "requirements.txt").read_text().splitlines():
        if name := re.match(r"[A-Za-z0-9_.-]+", line.strip()):
            pins[name.group().lower().replace("-", "_")] = line.strip()
    specs = [pins.get(m.lower(), DISTS.get(m, m)) for m in missing]
    print(f"installing missing suite requirements: {' '.join(specs)}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *specs], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Failures = list[tuple[str, str]]


def run_suite(suite: Path, wrapper: Path, files: list[str], keyword: str | None, out: Path,
              label: str, deselect: list[str]) -> tuple[Counts, Failures, float]:  # fmt: skip
    junit, log = out / f"junit-{label}.xml", out / f"pytest-{label}.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rN", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *(f"unit/{f}" for f in files)]  # fmt: skip
    if re.search(r"^\s*slow\s*:", (suite / "pytest.ini").read_text(), re.M):
        cmd += ["-m", "not slow"]
    if keyword:
        cmd += ["-k", keyword]
    for node in deselect:
        cmd += ["--deselect", node]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ASSISTANT_") and k not in ("SLOW_TESTS", "DEBUG_EXTERNAL")
    }
    env.update(LLAMA_SERVER_BIN_PATH=str(wrapper), PORT=str(free_port()),
               PYTHONDONTWRITEBYTECODE="1")  # fmt: skip
    print(f"[{label}] {shlex.join(cmd)}  (log: {log})", file=sys.stderr, flush=True)
    started = time.monotonic()
    with log.open("wb") as handle:
        subprocess.run(cmd, cwd=suite, env=env, stdout=handle, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    counts, failures = read_junit(junit) if junit.exists() else ({}, [])
    return counts, failures, elapsed


def read_junit(path: Path) -> tuple[Counts, list[tuple[str, str]]]:
    counts: Counts = {}
    failures: list[tuple[str, str]] = []
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "").split(".")
        file = next((part + ".py" for part in module if part.startswith("test_")), module[-1])
        row = counts.setdefault(file, [0, 0, 0, 0])
        kinds = {child.tag for child in case}
        kind = next((i for i, tag in ((1, "failure"), (2, "error"), (3, "skipped"))
                     if tag in kinds), 0)  # fmt: skip
        row[kind] += 1
        if kind in (1, 2):
            bad = next(c for c in case if c.tag in ("failure", "error"))
            text = (bad.get("message") or bad.text or "").strip()
            first = text.splitlines()[0] if text else ""
            failures.append((f"unit/{file}::{case.get('name')}", f"[{bad.tag}] {first}"[:240]))
    return counts, failures


def table(results: dict[str, Counts], files: list[str]) -> str:
    labels = list(results)
    if len(labels) == 1:
        head = "| test file | passed | failed | errors | skipped |\n|---|---:|---:|---:|---:|"
    else:
        head = ("| test file | " + " | ".join(f"{x} (pass/fail/err/skip)" for x in labels)
                + " |\n|---|" + "---:|" * len(labels))  # fmt: skip
    lines = [head]
    for name in [*files, "**total**"]:
        cells = []
        for label in labels:
            rows = results[label]
            row = ([sum(r[i] for r in rows.values()) for i in range(4)] if name == "**total**"
                   else rows.get(name, [0, 0, 0, 0]))  # fmt: skip
            cells += [str(n) for n in row] if len(labels) == 1 else ["/".join(map(str, row))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    if argv[:1] == ["serve-real"]:
        serve_real(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=DEFAULT_FILES, help="unit/ test files")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--deselect", action="append", default=[], metavar="NODEID",
                        help="a test to leave out (unit/FILE::NAME[ID]), repeatable")  # fmt: skip
    parser.add_argument("--llama-server", type=Path, help="run against this llama-server only")
    parser.add_argument("--both", type=Path, metavar="PATH", help="assistantd and this binary")
    parser.add_argument("--list-failures", action="store_true")
    parser.add_argument("--suite", type=Path, help="the tools/server/tests dir (default: found)")
    args = parser.parse_args(argv)
    files = [f if f.endswith(".py") else f + ".py" for f in args.files]
    suite = find_suite(args.suite)
    ensure_requirements(suite, files)
    out = Path(tempfile.mkdtemp(prefix="llama-suite-"))
    os.environ[ENV_MODEL] = str(smollm2())  # resolved once, not per server start
    os.environ[ENV_FIM] = str(fim_model())
    targets: list[tuple[str, Path]] = []
    if args.llama_server is None:
        targets.append(("assistantd", write_wrapper(out, "assistantd-server", ["serve"])))
    real = args.llama_server or args.both
    if real is not None:
        wrapper = write_wrapper(out, "llama-server", ["serve-real", str(real.resolve())])
        targets.append(("llama-server", wrapper))
    results: dict[str, Counts] = {}
    for label, wrapper in targets:
        counts, failures, elapsed = run_suite(
            suite, wrapper, files, args.keyword, out, label, args.deselect
        )
        results[label] = counts
        print(f"{label}: {sum(sum(r) for r in counts.values())} tests in {elapsed:.0f}s")
        if args.list_failures:
            for test_id, why in failures:
                print(f"  {test_id}: {why}")
    print(f"\nsuite: {suite}\nlogs and junit xml: {out}\n")
    print(table(results, files))
    return 0 if all(sum(r[1] + r[2] for r in c.values()) == 0 for c in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
