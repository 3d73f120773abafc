import pytest

from tasks.engine.budget import epochs_within_budget


@pytest.mark.parametrize(
    ("budget", "spent", "epoch", "expected"),
    [
        (60, 12, 6, 10),  # 48 s left: eight more epochs after the two done
        (60, 12, 7, 8),  # 6.86 more rounds down: the budget is an upper bound
        (60, 70, 6, 2),  # already over: stop with what is done
        (6000, 12, 6, 30),  # train.epochs is the most
        (60, 12, 0, 30),  # an epoch that cost nothing measurable: train.epochs
    ],
)
def test_epochs_within_budget(budget, spent, epoch, expected):
    assert epochs_within_budget(budget, spent, epoch, done=2, cap=30) == expected
