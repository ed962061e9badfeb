"""Training checkpoints: the last epoch's and the best epoch's, plus the loop state as JSON, so a killed run resumes
after its last saved epoch with the same result as an uninterrupted one."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from model_lib.model.schedule import LoopState
from model_lib.progress import say
from model_lib.storage.lake import write_file_atomically


class Checkpoints:
    """Last-epoch and best-epoch checkpoints plus a JSON of the loop state. Only the chief writes the real folder;
    other workers write to a scratch folder they delete (every worker must take part in saving mirrored state)."""

    def __init__(self, folder: Path | None, tracked: dict, model_weights: dict, is_chief: bool):
        """`tracked`: everything the last-epoch checkpoint restores; `model_weights`: every variable of the model
        by name (what the best-epoch checkpoint restores)."""
        import tensorflow as tf

        self.folder = folder
        self.is_chief = is_chief
        self.enabled = folder is not None
        if not self.enabled:
            return
        self.write_folder = folder if is_chief else Path(tempfile.mkdtemp(prefix="reco-ckpt-worker-"))
        self.last = tf.train.CheckpointManager(tf.train.Checkpoint(**tracked), self.write_folder / "last", 1)
        self.best = tf.train.CheckpointManager(tf.train.Checkpoint(**model_weights), self.write_folder / "best", 1)
        self.best_reader = tf.train.Checkpoint(**model_weights)
        self.state_path = self.write_folder / "loop_state.json"

    def restore(self, signature: dict) -> dict | None:
        """The loop state of a matching earlier run (model and optimizer restored in place), else None."""
        if not self.enabled:
            return None
        if not (self.folder / "loop_state.json").exists():
            return None
        if not resumable(self.folder, signature):
            say(f"checkpoints in {self.folder} are from other settings; starting afresh")
            if self.is_chief:
                shutil.rmtree(self.folder)
                self.folder.mkdir(parents=True)
            return None
        state = LoopState.from_json((self.folder / "loop_state.json").read_text())
        latest = self._latest(self.folder / "last")
        if latest is None:
            return None
        self.last.checkpoint.restore(latest).expect_partial()
        return state

    def save(self, state: LoopState, improved: bool) -> None:
        if not self.enabled:
            return
        self.last.save()
        if improved:
            self.best.save()
        # The state names an epoch only once its checkpoint is on disk.
        write_file_atomically(self.state_path, lambda staged: staged.write_text(state.to_json()))

    def restore_best(self) -> bool:
        if not self.enabled:
            return False
        latest = self._latest(self.folder / "best")
        if latest is None:
            return False
        self.best_reader.restore(latest).expect_partial()
        return True

    def close(self) -> None:
        if self.enabled and not self.is_chief:
            shutil.rmtree(self.write_folder, ignore_errors=True)

    @staticmethod
    def _latest(folder: Path) -> str | None:
        import tensorflow as tf

        return tf.train.latest_checkpoint(str(folder)) if folder.exists() else None


def resumable(checkpoint_dir: Path, signature: dict) -> bool:
    """True when the folder holds at least one finished epoch of a run with this signature."""
    state_path = checkpoint_dir / "loop_state.json"
    return state_path.exists() and json.loads(state_path.read_text()).get("signature") == signature


def restore_best_weights(model, best_weights, state: LoopState, checkpoints: Checkpoints) -> None:
    """The best epoch's weights: from memory when this process saw it, else from the best checkpoint."""
    if best_weights is not None:
        model.set_weights(best_weights)
    elif state.best_epoch:
        checkpoints.restore_best()
    checkpoints.close()
