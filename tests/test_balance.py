"""Imbalanced classes: the balanced sampler, the class-weighted loss, balanced accuracy, the
warnings of split_data.py and train.py, and --balance end to end."""
import csv
import itertools
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from timm.data.mixup import mixup_target

import engine
import evaluation
import loaders
import split_data
import train
from image_factory import write_class_tree
from splits import class_imbalance

LABELS = [0] * 30 + [1] * 6 + [2] * 4  # 40 images, the largest class 7.5x the smallest


def draws(sampler) -> list:
    return list(sampler)


def test_balanced_sampler_draws_every_class_equally_often():
    sampler = loaders.BalancedSampler(LABELS, seed=5)
    epoch = draws(sampler)
    assert len(epoch) == len(sampler) == 40  # an epoch as long as EpochSampler's
    per_class = Counter(LABELS[i] for i, _ in epoch)
    assert sorted(per_class.values()) == [13, 13, 14]
    assert {i for i, _ in epoch} >= set(range(30, 40))  # every image of the small classes comes up
    assert set(Counter(i for i, _ in epoch if LABELS[i] == 2).values()) <= {3, 4}  # 4 images, 13-14 draws: cycled
    assert len({seed for _, seed in epoch}) == 40  # a repeated image is augmented anew each time
    # the large class (30 images, 13-14 draws) shows a shuffled subset, another each epoch, not its first images
    large = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        large.append({i for i, _ in draws(sampler) if LABELS[i] == 0})
    assert large[0] != large[1] and all(taken != set(range(len(taken))) for taken in large)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_the_batches_an_epoch_trains_hold_every_class_equally_often(world_size):
    """The loader drops each rank's last partial batch: the classes are balanced within the whole batches, not over
    the epoch before the drop, which on a small folder left the smallest class 9 to 16 of 64 draws trained."""
    labels = [0] * 40 + [1] * 40 + [2] * 5  # 85 images: batches of 8 leave a partial batch on every rank
    for seed in range(20):
        trained = Counter()
        for rank in range(world_size):
            sampler = loaders.BalancedSampler(labels, seed=seed, rank=rank, world_size=world_size)
            batches = loaders.EpochBatches(sampler, batch_size=8)
            batches.start(epoch=seed % 3)
            epoch = itertools.islice(iter(batches), len(batches))  # the loader's stream runs on into the next epochs
            trained.update(labels[i] for batch in epoch for i, _ in batch)
        assert sum(trained.values()) == len(batches) * 8 * world_size < 85 + world_size
        assert max(trained.values()) - min(trained.values()) <= 1, (seed, trained)


def test_balanced_sampler_is_deterministic_per_seed_and_epoch_and_resumes_exactly():
    first = draws(loaders.BalancedSampler(LABELS, seed=5))
    assert first == draws(loaders.BalancedSampler(LABELS, seed=5))
    assert first != draws(loaders.BalancedSampler(LABELS, seed=6))
    later = loaders.BalancedSampler(LABELS, seed=5)
    later.set_epoch(1)
    assert draws(later) != first  # a new draw every epoch
    full = loaders.BalancedSampler(LABELS, seed=5)
    full.set_epoch(3)
    rest = loaders.BalancedSampler(LABELS, seed=5)
    rest.set_epoch(3, skip=16)
    assert draws(rest) == draws(full)[16:] and len(rest) == 24  # a mid-epoch resume: the rest, same seeds


def test_balanced_sampler_is_sharded_like_epoch_sampler():
    whole = draws(loaders.BalancedSampler(LABELS, seed=2))
    shards = [loaders.BalancedSampler(LABELS, seed=2, rank=r, world_size=3) for r in range(3)]
    parts = [draws(s) for s in shards]
    assert [len(p) for p in parts] == [len(s) for s in shards] == [14, 14, 14]  # 40 padded to 42
    assert sorted(p for part in parts for p in part) == sorted(whole + whole[:2])  # the epoch, split between ranks


def test_class_weights_average_one_over_the_images():
    weights = engine.inverse_frequency_weights([30, 6, 4])
    assert weights.tolist() == pytest.approx([40 / 90, 40 / 18, 40 / 12])
    assert sum(w * n for w, n in zip(weights.tolist(), [30, 6, 4])) / 40 == pytest.approx(1.0)
    assert engine.inverse_frequency_weights([7, 7, 7]).tolist() == [1.0, 1.0, 1.0]
    # a class whose training photos are gone (a resume): no weight, where total/C scaled every image's smoothing term
    # some 34x for counts [0, 1000, 1000]; the others average one as before
    assert engine.inverse_frequency_weights([0, 1000, 1000]).tolist() == [0.0, 1.0, 1.0]
    assert class_imbalance(["daisy", "roses"], [0, 16]) == "the classes are imbalanced: daisy has no image, the " \
                                                           "largest, roses, 16"


def test_weighted_loss_with_label_smoothing_and_mixup():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 0, 1])
    weights = engine.inverse_frequency_weights([30, 6, 4])
    # equal weights change nothing, for labels with smoothing and for soft targets
    ones = torch.ones(3)
    assert engine.loss_fn(logits, labels, 0.1, ones) == pytest.approx(engine.loss_fn(logits, labels, 0.1).item())
    soft = torch.softmax(torch.randn(6, 3), -1)
    assert engine.loss_fn(logits, soft, 0.0, ones) == pytest.approx(engine.loss_fn(logits, soft, 0.0).item())
    # without smoothing: each image's cross-entropy times its class's weight, averaged over the batch
    by_hand = (F.cross_entropy(logits, labels, reduction="none") * weights[labels]).mean()
    assert engine.loss_fn(logits, labels, 0.0, weights) == pytest.approx(by_hand.item())
    # mixup at lambda 1, with the smoothing inside its targets, is the unmixed loss with smoothing
    unmixed = engine.loss_fn(logits, labels, 0.1, weights)
    assert engine.loss_fn(logits, mixup_target(labels, 3, lam=1.0, smoothing=0.1), 0.0, weights) == \
        pytest.approx(unmixed.item())
    # a mixed pair weighs lam * w_a + (1 - lam) * w_b
    mixed = mixup_target(labels, 3, lam=0.7, smoothing=0.0)
    pair_weights = 0.7 * weights[labels] + 0.3 * weights[labels.flip(0)]
    by_hand = (torch.sum(-mixed * F.log_softmax(logits, -1), -1) * pair_weights).mean()
    assert engine.loss_fn(logits, mixed, 0.0, weights) == pytest.approx(by_hand.item())
    # smoothing moves a share of each image's weight toward the mean weight
    smoothed = (F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1)
                * (0.9 * weights[labels] + 0.1 * weights.mean())).mean()
    assert unmixed == pytest.approx(smoothed.item())


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    confusion = torch.tensor([[90, 0, 0], [5, 5, 0], [0, 0, 0]])  # the third class has no images
    assert evaluation.balanced_accuracy(confusion) == pytest.approx((1.0 + 0.5) / 2)
    assert confusion.trace().item() / confusion.sum().item() == pytest.approx(0.95)  # top-1 hides the weak class


def test_imbalance_warning_names_the_classes_and_the_ratio():
    assert class_imbalance(["a", "b", "c"], [30, 10, 12]) is None  # 3x is still fine
    message = class_imbalance(["a", "b", "c"], [31, 10, 12])
    assert "a (31 images)" in message and "3.1x" in message and "b (10)" in message
    assert "3.05x the images" in class_imbalance(["a", "b"], [61, 20])  # past the limit, not "3.0x" of "more than 3x"


def test_split_data_warns_about_imbalanced_classes_and_those_without_validation(tmp_path, capsys):
    write_class_tree(tmp_path / "photos", {"cats": 16, "dogs": 4})
    split_data.main(["--data-path", str(tmp_path / "photos"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "warning:" in err and "cats (16 images), has 4.0x the images of the smallest, dogs (4)" in err
    assert "--balance" in err
    write_class_tree(tmp_path / "more", {"cats": 16, "dogs": 1})  # the one dog photo: none for validation
    split_data.main(["--data-path", str(tmp_path / "more"), "--out", str(tmp_path / "out2")])
    assert "warning: 1 of the 2 classes has no validation image (dogs): nothing measures its recall" in capsys.readouterr().err


def test_split_data_warns_of_classes_without_a_test_image_whatever_the_split_holds(tmp_path, capsys):
    # no class with a test image: the test split is empty (not in the table), the warning still said, no KeyError
    write_class_tree(tmp_path / "pairs", {"cats": 2, "dogs": 2})
    split_data.main(["--data-path", str(tmp_path / "pairs"), "--out", str(tmp_path / "out"), "--test-ratio", "0.1"])
    assert "2 of the 2 classes have no test image (cats, dogs)" in capsys.readouterr().err
    # the count it names is the one that gives a test image at these ratios: 3 photos at --val-ratio 0.7 give none
    write_class_tree(tmp_path / "three", {"cats": 16, "dogs": 3})
    split_data.main(["--data-path", str(tmp_path / "three"), "--out", str(tmp_path / "out2"), "--val-ratio", "0.7",
                     "--test-ratio", "0.1"])
    assert "no test image (dogs): nothing measures its recall, and balanced accuracy is the mean over the others; " \
           "4 photos or more of each would give them some" in capsys.readouterr().err


@pytest.mark.parametrize("balance", ["sampler", "loss"])
def test_train_balances_and_logs_balanced_accuracy(tmp_path, capsys, monkeypatch, balance):
    write_class_tree(tmp_path / "photos", {"cats": 20, "dogs": 5}, size=(64, 64))
    real_loss, labels, weights = engine.loss_fn, Counter(), []

    def loss_seen(logits, targets, smoothing, class_weights=None):  # what train.py's steps trained on
        labels.update(targets.tolist())
        weights.append(class_weights)
        return real_loss(logits, targets, smoothing, class_weights=class_weights)
    monkeypatch.setattr(engine, "loss_fn", loss_seen)
    train.main(["--data-path", str(tmp_path / "photos"), "--model", "swin_micro_patch4_window4_128",
                "--img-size", "32", "--batch-size", "8", "--workers", "0", "--epochs", "1", "--no-progress",
                "--balance", balance, "--output", str(tmp_path), "--name", "run"])
    err = capsys.readouterr().err
    assert "imbalanced: the largest, cats (16 images), has 4.0x" in err and f"--balance {balance} compensates" in err
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert 0 <= float(rows[0]["balanced_acc_val"]) <= 1
    last = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert last["config"]["balance"] == balance
    # balancing is for the small classes: best.pth is chosen by the balanced accuracy, not top-1
    assert last["best_metric"] == "balanced_acc"
    assert last["best_acc"] == pytest.approx(float(rows[0]["balanced_acc_val"]), abs=1e-6)
    assert last["best_acc"] != pytest.approx(float(rows[0]["acc1_val"]), abs=1e-6)  # this data tells them apart
    # the balancing itself: 16 cats and 4 dogs train, two full batches of 8 an epoch; the sampler draws the dogs
    # about as often as the cats (a shuffle draws some 3 of 16), the loss weights them by inverse frequency
    assert sum(labels.values()) == 16 and len(weights) == 2
    if balance == "sampler":
        assert labels[1] >= 6 and all(w is None for w in weights)
    else:
        assert labels[1] <= 4
        assert all(torch.allclose(w, engine.inverse_frequency_weights([16, 4])) for w in weights)
    train.main(["--resume", str(tmp_path / "run"), "--epochs", "2"])  # said as the run started, not at each resume
    assert "imbalanced" not in capsys.readouterr().err
    # the test split too, asked for: a class of two photos gives its held-out one to validation, none to test
    write_class_tree(tmp_path / "few", {"cats": 16, "dogs": 2})
    split_data.main(["--data-path", str(tmp_path / "few"), "--out", str(tmp_path / "out3"), "--test-ratio", "0.2"])
    assert "warning: 1 of the 2 classes has no test image (dogs): nothing measures its recall, and balanced accuracy " \
           "is the mean over the others; 3 photos or more of each would give them some" in capsys.readouterr().err


def test_a_run_resumed_with_balance_keeps_best_pths_figure_as_the_bar(tmp_path, capsys):
    """--balance typed on resuming chooses best.pth by the balanced accuracy: the bar was reset to nothing ("not
    measured yet"), and the next epoch replaced best.pth however it did. It is the balanced accuracy best.pth's epoch
    measured (metrics.csv's row)."""
    write_class_tree(tmp_path / "photos", {"cats": 20, "dogs": 5}, size=(64, 64))
    common = ["--model", "swin_micro_patch4_window4_128", "--img-size", "32", "--batch-size", "8", "--workers", "0",
              "--no-progress"]
    with pytest.raises(SystemExit):  # stopped by --stop-after-epochs: status 0
        train.main(["--data-path", str(tmp_path / "photos"), *common, "--epochs", "3", "--stop-after-epochs", "1",
                    "--output", str(tmp_path), "--name", "run"])
    figure = float(next(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))["balanced_acc_val"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tmp_path / "run"), "--balance", "loss", "--stop-after-epochs", "1"])
    assert f"resumed at epoch 2, step 2 (best balanced accuracy so far {figure:.4f})" in capsys.readouterr().out
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=True)["best_acc"] >= figure
