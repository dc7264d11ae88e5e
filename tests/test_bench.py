"""The GPU benchmarks also run on a CPU, with the small variant, so they stay correct where no GPU is."""
import re
import subprocess
import sys

import pytest

import attention
import kernels
from script_runs import ROOT

sys.path.insert(0, str(ROOT / "bench"))


def test_bench_train_compares_the_step_with_timm_and_the_loop_with_its_loader(bench):
    out = bench("bench_train.py", "--device", "cpu", "--img-size", "64", "--batch-size", "8", "--rounds",
                    "1", "--steps", "1", "--e2e-batches", "2", "--workers", "1", "2", "--decode", "workers", "device",
                    "--attention", "plain", "sdpa", "flex", "--worker-nice", "10", "0", "--amp", "off")
    assert "swin_micro_patch4_window4_128 at 64 px, batch 8, amp off, eager, attention plain / sdpa / flex" in out
    assert "warm-up: timm " in out and ", bare plain " in out and ", bare sdpa " in out and ", loaders " in out
    # a way that fails (FlexAttention has no backward on a CPU) is left out, said so, and the others still run
    assert "bare flex: left out, it failed: NotImplementedError" in out and "bare flex /" not in out
    for line in ("bare plain / timm", "bare sdpa / timm", "e2e 320x240, 1 worker, nice 10 / bare plain",
                 "e2e 500x375, 1 worker, nice 10 / bare plain", "waiting for data",
                 "e2e 320x240, decoded on the device, 1 worker, nice 10 / bare plain",
                 "e2e 500x375, decoded on the device, 1 worker, nice 10 / bare plain",
                 "e2e 320x240, 2 workers, nice 10 / bare plain",  # a further --workers count: a row at the first size
                 "e2e 320x240, 1 worker, nice 0 / bare plain"):  # and a further --worker-nice value
        assert line in out, line
    assert "500x375, 2 workers" not in out and "500x375, 1 worker, nice 0" not in out
    assert "1 / 2 loader workers at nice 10 / 0" in out
    summary = [line for line in out.splitlines() if " img/s" in line and not line.startswith("round ")]
    assert len(summary) == 9 and len({line.index(" img/s") for line in summary}) == 1  # one column, long names too
    out = bench("bench_train.py", "--device", "cpu", "--img-size", "64", "--batch-size", "4", "--steps", "1",
                "--profile", "20")  # 20: under load, a preempted operator can push aten::mm out of a top 5
    assert "== timm: 1 step, the 20 operators" in out and "== bare" in out and "aten::mm" in out


def test_each_bare_row_of_bench_train_runs_with_its_own_kinds(monkeypatch):
    """The rows above are named by bare_variants; use() is what sets each one's LayerNorm, attention and casts
    before it runs (the kernels' own agreement is test_kernels.py's)."""
    import argparse
    import bench_train
    import precision
    for module, name in ((attention, "ATTENTION"), (kernels, "LAYER_NORM"), (precision, "CAST_ONCE")):
        monkeypatch.setattr(module, name, getattr(module, name))  # put back after
    args = argparse.Namespace(attention=["plain", "sdpa"], layer_norm=["torch", "triton"], cast_once=["on", "off"])
    variants = bench_train.bare_variants(args)
    assert len(variants) == 8 and variants["bare sdpa, triton LN, cast once off"] == ("sdpa", "triton", False)
    for kinds in variants.values():
        bench_train.use(kinds)
        assert (attention.ATTENTION, kernels.LAYER_NORM, precision.CAST_ONCE) == kinds
    bench_train.use(None)  # timm's row: ours as it was
    assert (attention.ATTENTION, kernels.LAYER_NORM, precision.CAST_ONCE) == kinds


def test_bench_train_leaves_out_a_row_whose_cuda_graphs_were_not_captured():
    """--cuda-graphs: a model whose capture failed trains eagerly, said by a notice; its figures would read as the
    graphed ones under the run's "eager with CUDA graphs" heading, so the row goes."""
    import argparse
    import bench_train
    import compiling
    import torch
    graphed = compiling.CudaGraphed(torch.nn.Linear(2, 2))
    state = argparse.Namespace(net=graphed)
    assert not bench_train.graphed_as_asked(state)  # not captured
    graphed.graphed = (graphed.model, torch.Size([1, 2]))
    assert bench_train.graphed_as_asked(state)
    graphed.failed = True
    assert not bench_train.graphed_as_asked(state)
    assert bench_train.graphed_as_asked(argparse.Namespace(net=torch.nn.Linear(2, 2)))  # not asked for graphs


def test_bench_train_memory_times_its_rows_alone_not_the_largest_batchs_probes(monkeypatch):
    """--memory: each probe of the largest batch that fits takes the steps its peak needs, no timed ones (their
    speed went unread: on the H200 some 8 s of the part at batches of 1155 to 2628)."""
    import argparse
    import bench_train
    import torch
    steps = []
    monkeypatch.setattr(bench_train, "step_round", lambda state, cfg, batch, n: steps.append((len(batch[1]), n)) or 1e3)
    monkeypatch.setattr(bench_train, "build_state", lambda *args: None)
    for name, stub in (("reset_peak_memory_stats", lambda *a: None), ("max_memory_allocated", lambda *a: 2**30),
                       ("empty_cache", lambda: None)):
        monkeypatch.setattr(torch.cuda, name, stub)
    args = argparse.Namespace(model="swin_micro_patch4_window4_128", img_size=32, steps=20, batch_size=16)
    assert bench_train.peak_and_speed(args, None, torch.device("cpu"), None, 16, False) == (1.0, 1e3)
    assert bench_train.peak_and_speed(args, None, torch.device("cpu"), None, 16, False, timed=False) == (1.0, None)
    assert steps == [(16, 2), (16, 20), (16, 2)]


def test_bench_data_gpu_decoding_code_runs_on_the_cpu():
    """--gpu-decode's batched decode, crop and resize (train.py --decode device), run on the CPU here."""
    import argparse
    import bench_data
    samples = [(str(path), 0) for path in sorted((ROOT / "samples" / "flowers").glob("*/*.jpg"))]
    args = argparse.Namespace(images=32, batch_size=8, img_size=64, rounds=1)
    assert bench_data.gpu_decode_rate(args, samples, device="cpu") > 0


def test_bench_traffic_counts_the_same_matmuls_in_both_models(bench):
    out = bench("bench_traffic.py", "--model", "swin_micro_patch4_window4_128", "--img-size", "64", "--batch-size",
                "2", "--top", "5")
    flops = [line.split(" and ")[1] for line in out.splitlines() if line.startswith(("ours:", "timm:"))]
    assert len(flops) == 2 and flops[0] == flops[1] and "GFLOP of matmuls per image" in flops[0]
    assert "bytes moved, timm / ours" in out and out.count("\n") >= 5 + 6


def test_bench_traffic_compiled_reads_inductors_own_count():
    """--compiled's count_compiled, on a network small enough to compile in seconds (swin_tiny takes minutes a
    model): Inductor's count is read from its metrics, its log is left as it was."""
    import logging
    import bench_traffic
    import torch
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, 4), torch.nn.LayerNorm([8, 4, 4]), torch.nn.Flatten(),
                              torch.nn.Linear(128, 5))
    net.num_classes = 5
    log = logging.getLogger("torch._inductor.compile_fx.__inductor_metrics")
    level = log.level
    moved, _, kernels_made = bench_traffic.count_compiled(net, 2, 16)
    assert moved >= 2 * 3 * 16 * 16 * 4 and kernels_made > 0  # the step reads its float32 input at least once
    assert log.level == level and not log.handlers


def test_bench_attention_times_each_kind(bench):
    out = bench("bench_attention.py", "--device", "cpu", "--repeats", "1", "--no-compile")
    assert "fastest:" in out and out.count("stage 1 regular") == 2  # plain and sdpa (FlexAttention: GPUs)


def test_bench_heap_compares_glibc_as_it_comes_with_the_heap_reused(bench):
    out = bench("bench_heap.py", "--model", "swin_micro_patch4_window4_128", "--train-batch", "4", "--steps", "1",
                "--rounds", "1", "--tasks", "train")  # a process for each way: one task here
    for line in ("train default", "train reuse", "train, reuse / default: ", "page faults an image"):
        assert line in out, line
    assert "infer" not in out.split("\n", 1)[1]  # past the command


def test_bench_predict_times_predict_py_against_the_tutorial_loop_and_the_onnx_programs(export_packages, bench):
    # one class folder of the bundled sample, 20 photos: the programs' exports are the test's time
    out = bench("bench_predict.py", ROOT / "samples" / "flowers" / "daisy", "--copies", "1", "--rounds", "1",
                "--img-size", "64", "--onnx")
    assert "20 photos (20 from " in out and "swin_micro_patch4_window4_128 at 64 px, random weights" in out
    assert "round 1: tutorial loop " in out and "ratio predict.py / tutorial loop: " in out
    assert "predict.py .onnx " in out and "predict.py int8 .onnx " in out and "predict.py fp16 .onnx " in out
    off = dict(re.findall(r"ratio predict\.py (.*)\.onnx / predict\.py checkpoint: [\d.]+x; the same top class as "
                          r"the checkpoint for \d+ of 20 photos, probabilities within ([\d.e-]+) of its", out))
    assert float(off[""]) < 1e-5 and 1e-5 < float(off["int8 "]) < 0.05, out  # fp32: equal; int8: near
    assert 1e-7 < float(off["fp16 "]) < 0.01, out  # fp16: nearer


def test_bench_onnx_times_the_programs_of_an_attention_path(export_packages, bench):
    """sdpa, the path export.ONNX_ATTENTION switches from: one export, fp32, int8 and int8 calibrated on photos
    (bench_predict's test runs the default path)."""
    out = bench("bench_onnx.py", "--model", "swin_micro_patch4_window4_128", "--img-size", "64", "--batch-size", "2",
                "--attention", "sdpa", "--rounds", "1", "--static-int8")
    assert "swin_micro_patch4_window4_128 at 64 px, random weights, batch 2" in out
    assert "round 1: sdpa fp32 " in out and "sdpa int8: " in out and "x sdpa fp32; logits within" in out
    assert "sdpa int8 static: " in out


def test_bench_checkpoint_times_a_save_beside_training_and_in_the_loop(bench):
    out = bench("bench_checkpoint.py", "--model", "swin_micro_patch4_window4_128", "--rounds", "2")
    for line in ("round 2: in the loop ", "training held by a save, in the loop: ",
                 "training held by a save, CheckpointWriter: ", "CheckpointWriter's write done after ",
                 "held, in the loop / CheckpointWriter: "):
        assert line in out, out


def test_the_official_code_check_says_what_it_needs(tmp_path):
    """bench/check_official.py compares with the official repo's own model code, which only a checkout
    has (docs/models.md: Faithful to the official checkpoints): without one, one line that says so."""
    result = subprocess.run([sys.executable, "bench/check_official.py", "--official", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "not a checkout of microsoft/Swin-Transformer" in result.stderr
    assert "Traceback" not in result.stderr


def test_benchmarks_say_a_users_mistake_in_one_line():
    """An unknown --model in bench_heap.py (said by its measuring process) and --device cuda without a GPU in
    bench_model.py and bench_checkpoint.py: one line, status 2, no traceback."""
    import torch
    cases = [["bench/bench_heap.py", "--model", "nope", "--rounds", "1", "--tasks", "train"]]
    if not torch.cuda.is_available():
        cases += [["bench/bench_model.py", "--device", "cuda"], ["bench/bench_checkpoint.py", "--device", "cuda"]]
    for case in cases:
        result = subprocess.run([sys.executable, *case], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (case, result.stderr)
        assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: "), result.stderr


def test_each_benchmark_imports_the_projects_modules_after_putting_its_root_on_the_path():
    """`python bench/<script>.py` puts bench/ on the path, not the project's root: a project module imported
    before the script's sys.path.insert is a ModuleNotFoundError as typed (bench_balance.py's config was),
    which the in-process `bench` fixture, whose path has the root, cannot see."""
    import ast
    project = {p.stem for p in ROOT.glob("*.py")}
    for script in sorted((ROOT / "bench").glob("*.py")):
        inserted = False
        for node in ast.parse(script.read_text()).body:
            if "sys.path.insert" in ast.unparse(node):
                inserted = True
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            early = [n for n in names if n.split(".")[0] in project and not inserted]
            assert not early, f"{script.name}:{node.lineno} imports {early} before the project's root is on the path"


@pytest.mark.parametrize("script, flag, value", [
    ("bench_attention", "--repeats", "0"), ("bench_balance", "--keep", "2"), ("bench_balance", "--epochs", "0"),
    ("bench_data", "--img-size", "0"), ("bench_data", "--upscale", "0"), ("bench_data", "--workers", "-1"),
    ("bench_heap", "--train-batch", "0"), ("bench_model", "--memory-batch-size", "0"),
    ("bench_predict", "--copies", "0"), ("bench_traffic", "--img-size", "0"), ("bench_train", "--e2e-batches", "0"),
    ("bench_train", "--img-size", "0")])
def test_benchmarks_refuse_a_number_out_of_range_as_they_parse(script, flag, value, monkeypatch, capsys):
    """A count of 0 ran to a ZeroDivisionError, a ValueError deep in a DataLoader or, --img-size 0, to figures at the
    variant's size: argparse's one error instead."""
    import importlib
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.setattr(sys, "argv", [script, flag, value])
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(script).parse_args()
    assert stop.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err


def test_bench_data_times_both_loaders_and_the_smaller_copies(bench):
    out = bench("bench_data.py", "--img-size", "32", "--images", "16", "--batch-size", "8", "--rounds", "1",
                "--workers", "0", "--max-size", "96")
    for line in ("100 images, median size ", "0 workers, 1 round x 16 images", "round 1: torchvision ImageFolder ",
                 "median data.py, --max-size 96: ", "ratio data.py / ImageFolder: ",
                 "ratio data.py over --max-size 96 copies / over the photos: ", "no hand-over with --workers 0"):
        assert line in out, out


def test_bench_model_compares_a_train_step_and_inference_with_timm(bench):
    out = bench("bench_model.py", "--models", "swin_tiny_patch4_window7_224", "--batch-size", "1", "--rounds", "1")
    rows = re.findall(r"swin_tiny_patch4_window7_224 +(train step|inference ) +timm +[\d.]+ img/s +ours +[\d.]+ img/s +"
                      r"ratio [\d.]+", out)
    assert rows == ["train step", "inference "], out
    assert "batch 1; 1 round;" in out


def test_bench_model_times_both_dtypes_side_by_side_and_ours_bf16_against_fp32(bench):
    """And ours' bf16 inference with its weights' casts made at every pass beside it held (--held-casts on off)."""
    out = bench("bench_model.py", "--models", "swin_tiny_patch4_window7_224", "--batch-size", "1", "--rounds", "1",
                "--dtype", "fp32", "bf16", "--held-casts", "on", "off")
    rows = re.findall(r"swin_tiny_patch4_window7_224 +(train step|inference ) (fp32|bf16) +timm +[\d.]+ img/s +ours "
                      r"+[\d.]+ img/s +ratio [\d.]+", out)
    assert rows == [("train step", "fp32"), ("train step", "bf16"), ("inference ", "fp32"), ("inference ", "bf16")], out
    gains = re.findall(r"swin_tiny_patch4_window7_224 +(train step|inference ) +ours bf16 against fp32: [\d.]+x", out)
    assert gains == ["train step", "inference "], out
    assert re.search(r"swin_tiny_patch4_window7_224 +inference +bf16, casts made at every pass: ratio [\d.]+ to timm; "
                     r"held casts [\d.]+x them", out), out
    assert "# fp32 and bf16; batch 1; 1 round;" in out


FAKE_PYTHON = """#!/bin/bash
# gpu_session.sh's python3: its check for CUDA answers FAKE_CUDA; every part prints its command and ends with status 3
if [[ $1 == -c ]]; then [[ $2 == *print* ]] && echo versions; exit $((1 - FAKE_CUDA)); fi
echo "ran $*"
exit 3
"""


def test_gpu_session_logs_every_part_and_skips_what_its_budget_cannot_hold(tmp_path):
    """bench/gpu_session.sh, with stand-ins for python3 and nvidia-smi: without CUDA it stops at once, status 2, and
    says why in its log too (what a lent machine hands back); with it, a part that fails, an unknown part and a part
    that needs more than is left of BUDGET (train_compiled's 150 s) each leave their line in the log, and the parts
    after them still run."""
    import os
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text(FAKE_PYTHON)
    (shim / "nvidia-smi").write_text("#!/bin/bash\necho 'GPU 0: stand-in'\n")
    for tool in shim.iterdir():
        tool.chmod(0o755)

    def session(cuda: bool, budget: str, *parts):
        out = tmp_path / f"out-{cuda}-{budget}"
        env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "FAKE_CUDA": str(int(cuda)),
               "OUT": str(out), "BUDGET": budget}
        done = subprocess.run(["bash", "bench/gpu_session.sh", *parts], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        return done, (out / "session.log").read_text()

    done, log = session(False, "500")
    assert done.returncode == 2 and "sees no CUDA GPU" in done.stderr and "sees no CUDA GPU" in log
    done, log = session(True, "9m")
    assert done.returncode == 2 and "BUDGET=9m: a whole number of seconds" in log
    done, log = session(True, "100", "checkpoint", "bogus", "train_compiled data")
    assert done.returncode == 0, done.stderr
    assert "GPU 0: stand-in" in log and "versions" in log
    assert "=== checkpoint (at most 60 s): python3 bench/bench_checkpoint.py" in log
    assert "ran bench/bench_checkpoint.py --device cuda" in log
    assert "=== checkpoint: status 3," in log and "unknown part bogus" in log
    assert "=== train_compiled: skipped, it needs 150 s" in log and "ran bench/bench_train" not in log
    assert "=== data (at most " in log and "=== data: status 3," in log
