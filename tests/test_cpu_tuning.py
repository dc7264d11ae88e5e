"""What train.py and predict.py set for the CPU as they start, each process-wide: freed tensors kept in the heap
(utils.reuse_freed_cpu_memory) and torch's threads sleeping while they wait (utils.threads_sleep_while_waiting),
checked in processes of their own."""
import os
import subprocess
import sys

import pytest

from script_runs import ROOT


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_cpu_runs_take_big_tensors_from_the_heap_again():
    """utils.reuse_freed_cpu_memory (train.py and predict.py on a CPU): a 64 MB tensor made and freed step
    after step comes from the heap without a page fault once the heap has grown to the steps' needs (a few
    steps); without it glibc maps it afresh every time, 16,384 pages zeroed one by one."""
    code = """if True:
        import resource, torch, utils
        def faults_of_the_last_step():
            for step in range(10):
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                x, y = torch.ones(2**24), torch.ones(256)  # 64 MB, and a small tensor made after it, as a step makes
                del x
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        glibc = faults_of_the_last_step()
        utils.reuse_freed_cpu_memory()
        print(glibc, faults_of_the_last_step())"""
    # a process of its own: this one has reused its heap since conftest.py started
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    glibc, reuse = map(int, done.stdout.split())
    assert glibc > 10_000 and reuse < 1_000, (glibc, reuse)


@pytest.mark.parametrize("script", ["train.py", "predict.py"])
def test_the_scripts_threads_sleep_while_waiting_set_before_torch_loads(script, monkeypatch):
    """utils.threads_sleep_while_waiting: OpenMP reads its wait policy as torch loads it, so the scripts set it
    before their first import of torch (one imported first would leave torch's threads spinning, a run beside another
    at work up to 12 times slower: bench/bench_threads.py); a policy or spin count the user set is kept."""
    code = """if True:
        import os, runpy, sys
        seen = []
        class Watch:  # the environment as torch is first imported
            def find_spec(self, name, path=None, target=None):
                if name == "torch" and not seen:
                    seen.append(os.environ.get("OMP_WAIT_POLICY"))
        sys.meta_path.insert(0, Watch())
        sys.argv = [sys.argv[1], "--help"]
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit:
            pass
        print(seen, file=sys.stderr)"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    for extra, want in (({}, "['PASSIVE']"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "['ACTIVE']"),
                        ({"GOMP_SPINCOUNT": "300000"}, "[None]")):
        done = subprocess.run([sys.executable, "-c", code, script], cwd=ROOT, capture_output=True, text=True,
                              env={**env, **extra}, check=True)
        assert done.stderr.strip().splitlines()[-1] == want, (extra, done.stderr)
