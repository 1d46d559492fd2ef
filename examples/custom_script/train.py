"""A plain PyTorch training script that kubetune tunes as it is.

Alone, it trains the config's own values:   python train.py --config config.yaml
Tuned, it is each trial of the search:     ml-search --config config.yaml

The lines that talk to kubetune are marked ``# kubetune``: the trial's config, its
checkpoint folder and one report per epoch (which raises kubetune.Pruned, ending the
script quietly, when the pruner stops the trial). Everything else is the script's own.
"""

from __future__ import annotations

import os

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import kubetune  # kubetune


class SmallNet(nn.Module):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def digits(val_split: float, seed: int) -> tuple[torch.Tensor, ...]:
    """scikit-learn's 8x8 digits as (train x, train y, val x, val y) tensors."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=val_split, stratify=y, random_state=seed)
    as_images = lambda a: torch.tensor(a, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0  # noqa: E731
    return as_images(x_train), torch.tensor(y_train), as_images(x_val), torch.tensor(y_val)


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int, seed: int) -> None:
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(x), batch_size):
        batch = order[start:start + batch_size]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return (logits.argmax(1) == y).float().mean().item(), nn.functional.cross_entropy(logits, y).item()


def main() -> None:
    trial = kubetune.trial()  # kubetune
    cfg = trial.config  # kubetune: this trial's values, or the config's own when run alone
    seed, epochs = cfg["training"]["seed"], cfg["training"]["num_epochs"]
    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = digits(cfg["data"]["val_split"], seed)
    model = SmallNet(cfg["model"]["dropout"])
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["optimizer"]["lr"],
                                momentum=cfg["optimizer"]["momentum"])

    checkpoint = trial.checkpoint_dir / "last.pt"  # kubetune: survives a restart of the trial
    done = 0
    if checkpoint.exists():  # a preempted or interrupted trial continues where it stopped
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        done = state["epoch"]
        print(f"resuming after epoch {done} (the storage has {trial.resume_epoch()})", flush=True)

    for epoch in range(done + 1, epochs + 1):
        train_one_epoch(model, optimizer, x_train, y_train, cfg["training"]["batch_size"], seed + epoch)
        val_acc, val_loss = evaluate(model, x_val, y_val)
        # Save before reporting: the checkpoint is then never behind what the storage holds.
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                   checkpoint.with_suffix(".tmp"))
        os.replace(checkpoint.with_suffix(".tmp"), checkpoint)
        print(f"epoch {epoch}/{epochs}: val_acc={val_acc:.4f} val_loss={val_loss:.4f}", flush=True)
        trial.report(epoch, {"val_acc": val_acc, "val_loss": val_loss})  # kubetune


if __name__ == "__main__":
    main()
