"""The commands that README.md and docs/*.md (their command lines and inline commands), the scripts' docstrings
and bench/gpu_session.sh show parse as they are written, with the scripts' and benchmarks' own parsers: a flag
renamed or removed fails here, not in a user's terminal (or in a GPU session's few minutes). And every link
between those pages lands on a file, and on a heading or an anchor of it."""
import ast
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

import config
import kernels
import predict
import split_data
import train
import utils

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PARSE = {
    "train.py": lambda args: config.parse_config(train.build_parser(), args),
    "predict.py": lambda args: predict.build_parser().parse_args(args),
    "split_data.py": lambda args: split_data.parse_args(args),
}
BENCHMARKS = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "bench").glob("bench_*.py"))


def parse_benchmark(script: str, args: list, monkeypatch) -> None:
    """A benchmark's parse_args() on `args`, its device left unresolved (a GPU command parses on a CPU)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    module = importlib.import_module(Path(script).stem)

    def unresolved(name, *rest):
        return torch.device("cpu" if name == "auto" else name)
    monkeypatch.setattr(module, "select_device", unresolved, raising=False)
    monkeypatch.setattr(utils, "select_device", unresolved)  # common.gpu_or_small's, imported as it runs
    monkeypatch.setattr(sys, "argv", [script, *args])
    module.parse_args()


ENVIRONMENT = r"(?:[A-Z_]+=\S* )*"  # VAR=value before a command: the shell's, set for the parse


def documented_commands() -> list:
    """(where, script, arguments, environment) of every `python <script>` or `torchrun ... <script>` line."""
    found = []
    texts = {page.relative_to(ROOT).as_posix(): page.read_text() for page in PAGES}
    texts.update({f"{path.name} docstring": ast.get_docstring(ast.parse(path.read_text())) or ""
                  for path in sorted([*ROOT.glob("*.py"), *(ROOT / "bench").glob("*.py")])})
    for source, text in texts.items():
        text = text.replace("\\\n", " ")  # continued lines, as a shell joins them
        for number, line in enumerate(text.splitlines(), 1):
            # whole lines, and commands quoted inline (`python train.py --resume ...`), but not a usage
            # summary with [optional] parts or elided ones (...)
            inline = [span for span in re.findall(rf"`({ENVIRONMENT}python3? [^`]+)`", line)
                      if "[" not in span and "..." not in span]
            for command in line.split("&&") + inline:
                command = command.strip().removeprefix("$ ")
                environment = re.match(ENVIRONMENT, command).group()
                command = command.removeprefix(environment)
                if not re.match(r"(python3? |torchrun )", command):
                    continue
                words = shlex.split(command, comments=True)
                words = words[:next((i for i, w in enumerate(words) if w in (">", "<", "|", "2>")), len(words))]
                scripts = [i for i, word in enumerate(words) if word in PARSE or word in BENCHMARKS]
                if scripts:
                    found.append((f"{source} line {number}", words[scripts[0]], words[scripts[0] + 1:],
                                  dict(word.split("=", 1) for word in environment.split())))
    # the GPU session's parts: `part NAME SECONDS python3 bench/...`, some inside bash -c "... && ..."
    session = (ROOT / "bench" / "gpu_session.sh").read_text().replace("\\\n", " ")
    for match in re.finditer(r"python3 (bench/bench_\w+\.py)([^;&\"]*)", session):
        found.append(("gpu_session.sh", match.group(1), shlex.split(match.group(2)), {}))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_script():
    assert {script for _, script, _, _ in COMMANDS} == set(PARSE) | set(BENCHMARKS) and len(COMMANDS) > 60


@pytest.mark.parametrize("where, script, args, environment", COMMANDS, ids=[f"{w} {s}" for w, s, *_ in COMMANDS])
def test_documented_command_parses(where, script, args, environment, monkeypatch):
    monkeypatch.chdir(ROOT)  # --config configs/... as from the clone's root
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if "TRITON_INTERPRET" in environment:  # read when kernels.py is imported, as Triton reads it
        monkeypatch.setattr(kernels, "INTERPRET", environment["TRITON_INTERPRET"] == "1")
    try:
        PARSE[script](args) if script in PARSE else parse_benchmark(script, args, monkeypatch)
    except SystemExit as stop:
        if stop.code == 0:  # --help
            return
        pytest.fail(f"{where}: python {script} {' '.join(args)} does not parse (exit {stop.code})")


def anchors(text: str) -> set:
    """The places a link can name in a page: its headings, as GitHub makes their anchors (lower case, punctuation
    but - and _ dropped, spaces as -, a repeat numbered; not a `#` line inside a code block), and its
    <a id="..."> anchors."""
    targets, seen, in_code = set(), {}, False
    for line in text.splitlines():
        in_code ^= line.startswith("```")
        if (heading := re.match(r"#+ (.+)$", line)) and not in_code:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            targets.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return targets | set(re.findall(r'<a id="([^"]+)"></a>', text))


def test_every_link_between_the_pages_lands():
    """The README is the guide and docs/ the full account, linked both ways: a link to a section
    ([Speed](#speed), [GPU](docs/gpu.md#training-on-a-gpu)) or a paragraph (<a id="gelu">) must land there,
    and a link to a file (samples/CREDITS.md) must find it."""
    broken, count = [], 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            count += 1
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and anchor not in anchors(linked.read_text()):
                broken.append(f"{page.name}: {target} (no such heading or anchor)")
    assert count > 50 and not broken, broken
