"""checkpoint.restore_latest: a damaged latest step falls back to the previous good one."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privjax.errors import WorkdirError
from privjax.runtime import checkpoint

# --- Checkpoints: a damaged latest step falls back to the previous good one ------------


def _weights(step):  # [64, 16]: distinct values, so a changed byte changes a number
  return jnp.arange(1024, dtype=jnp.float32).reshape(64, 16) + step


def _two_steps(directory):
  mngr = checkpoint.manager(str(directory))
  for step in (10, 20):
    checkpoint.save(mngr, step, {"w": _weights(step)}, {"step": step})
  mngr.wait_until_finished()
  mngr.close()


ABSTRACT = {"w": jax.ShapeDtypeStruct((64, 16), jnp.float32)}


def _restore(directory, abstract=ABSTRACT):
  """restore_latest on a manager of `directory` that is closed again, whatever happens."""
  mngr = checkpoint.manager(str(directory))
  try:
    return checkpoint.restore_latest(mngr, abstract)
  finally:
    mngr.close()


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _flip_a_data_byte(step):  # same size, one bit: orbax itself restores it as a changed number
  path = max((step / "state").glob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))


def _edit_meta(step):  # same size: the record says another step
  path = step / "meta" / "metadata"
  path.write_text(path.read_text().replace('"step": 20', '"step": 29'))


def _drop_checksum(step):  # as a privjax from before checksummed checkpoints wrote it
  path = step / "meta" / "metadata"
  meta = json.loads(path.read_text())
  del meta["contents_sha256"]
  path.write_text(json.dumps(meta))


DAMAGE = {
  "no-checksum": _drop_checksum,
  "data-truncated": lambda step: [_truncate(p) for p in (step / "state" / "d").iterdir()],
  "data-byte-flipped": _flip_a_data_byte,
  "meta-edited": _edit_meta,
  "manifest-deleted": lambda step: (step / "state" / "manifest.ocdbt").unlink(),
  "meta-garbled": lambda step: (step / "meta" / "metadata").write_text('{"step": 2'),
  "metadata-deleted": lambda step: (step / "state" / "_METADATA").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_step(tmp_path, damage, caplog):
  _two_steps(tmp_path)
  DAMAGE[damage](tmp_path / "20")
  mngr = checkpoint.manager(str(tmp_path))
  try:
    with caplog.at_level("WARNING"):
      step, state, meta = checkpoint.restore_latest(mngr, ABSTRACT)
    assert step == 10 and meta == {"step": 10}
    np.testing.assert_array_equal(state["w"], _weights(10))
    assert "checkpoint step 20" in caplog.text and "cannot be restored" in caplog.text
    if damage in ("data-byte-flipped", "meta-edited"):  # caught by privjax's checksum
      assert "do not match the checksum" in caplog.text
    if damage == "no-checksum":
      assert "saved without a checksum" in caplog.text
    # The damaged step is set aside, so training can save step 20 again.
    assert (tmp_path / "20.damaged").is_dir() and not (tmp_path / "20").exists()
    checkpoint.save(mngr, 20, {"w": _weights(21)}, {"step": 21})
    mngr.wait_until_finished()
  finally:
    mngr.close()
  step, state, meta = _restore(tmp_path)
  assert step == 20 and meta == {"step": 21}


def test_no_restorable_checkpoint_is_one_line_naming_the_step(tmp_path):
  _two_steps(tmp_path)
  for step in ("10", "20"):
    DAMAGE["manifest-deleted"](tmp_path / step)
  with pytest.raises(WorkdirError) as e:
    _restore(tmp_path)
  message = str(e.value)
  assert f"the checkpoint in {tmp_path / '20'} is damaged" in message and "\n" not in message
  assert f"delete {tmp_path} to redo this stage" in message
  assert sorted(os.listdir(tmp_path)) == ["10", "20"]  # nothing moved when nothing restores


def test_no_checkpoint_is_none(tmp_path):
  assert _restore(tmp_path / "c") is None


def test_a_checkpoint_of_another_layout_is_not_called_damaged(tmp_path):
  """Steps saved with another tree (another privjax version) fail to restore alike: the
  one line says so, and nothing is renamed as damaged."""
  _two_steps(tmp_path)
  with pytest.raises(WorkdirError) as e:
    _restore(tmp_path, {"w": ABSTRACT["w"], "ema": ABSTRACT["w"]})
  message = str(e.value)
  assert "laid out otherwise than this privjax's" in message and "damaged" not in message
  assert f"delete {tmp_path} to redo this stage" in message and "\n" not in message
  assert sorted(os.listdir(tmp_path)) == ["10", "20"]
