"""Which weights best.pth holds (train.py's run_epochs): the epoch with the best validation figure, kept through
worse epochs after it, and the EMA's weights where they score better than the model's. The figures are set here
(the real evaluation runs; its top-1 replaced), so each case is the one the test names."""
import torch

import checkpoints
import evaluation
from script_runs import FAST, train_here


def scored(monkeypatch, scores: list) -> None:
    """The validations' top-1 in the order train.py asks for them (each epoch: the model's, then the EMA's)."""
    real, figures = evaluation.evaluate, iter(scores)

    def evaluate(*args, **kwargs):
        result = real(*args, **kwargs)
        score = next(figures, None)  # then as they are: the report's own evaluations
        return result if score is None else {**result, "acc1": score}
    monkeypatch.setattr(evaluation, "evaluate", evaluate)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_a_worse_epoch_after_the_best_does_not_replace_it(flowers, tmp_path, capsys, monkeypatch):
    scored(monkeypatch, [0.5, 0.2, 0.3])
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "3", "--output", tmp_path, "--name", "b")
    best = checkpoints.load_checkpoint(tmp_path / "b" / "best.pth")
    last = checkpoints.load_checkpoint(tmp_path / "b" / "last.pth")
    assert best["epoch"] == 1 and last["epoch"] == 3 and last["best_acc"] == 0.5  # not epoch 3's 0.3 over 0.2
    assert not same_weights(best["model"], last["model"])


def test_the_ema_weights_are_best_pth_where_they_score_better(flowers, tmp_path, capsys, monkeypatch):
    scored(monkeypatch, [0.2, 0.6])  # the model's, the EMA's
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--ema", "--output", tmp_path, "--name", "e")
    best = checkpoints.load_checkpoint(tmp_path / "e" / "best.pth")
    last = checkpoints.load_checkpoint(tmp_path / "e" / "last.pth")
    assert not same_weights(last["model"], last["ema"])  # the EMA trails the model: two sets of weights to tell apart
    assert same_weights(best["model"], last["ema"]) and best["best_acc"] == 0.6
    # the model's where they score better
    scored(monkeypatch, [0.6, 0.2])
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--ema", "--output", tmp_path, "--name", "m")
    best = checkpoints.load_checkpoint(tmp_path / "m" / "best.pth")
    last = checkpoints.load_checkpoint(tmp_path / "m" / "last.pth")
    assert same_weights(best["model"], last["model"]) and not same_weights(best["model"], last["ema"])
