"""What privjax prints: its own lines once, every warning."""


def test_quiet_keeps_privjax_lines_once_and_every_warning():
  import logging

  from privjax import logs

  quiet = logs.Quiet()

  def record(path, level, message):
    return logging.LogRecord("absl", level, path, 1, message, None, None)

  import os

  package = os.path.dirname(os.path.abspath(logs.__file__))
  own = os.path.join(package, "audit.py")
  assert quiet.filter(record(own, logging.INFO, "stage attacks ..."))
  assert not quiet.filter(record(own, logging.INFO, "stage attacks ..."))  # once
  assert not quiet.filter(record("/x/orbax/checkpoint/x.py", logging.INFO, "saved step 40"))
  assert quiet.filter(record("/x/jax/_src/xla_bridge.py", logging.WARNING, "no GPU"))
  assert quiet.filter(record(own, logging.WARNING, "a warning"))
  assert quiet.filter(record(own, logging.WARNING, "a warning"))  # warnings every time


def test_quiet_drops_third_party_lines_from_a_venv_inside_a_clone_named_privjax():
  import logging
  import os

  from privjax import logs

  quiet = logs.Quiet()
  clone = os.path.dirname(os.path.dirname(os.path.abspath(logs.__file__)))
  for path in (
    os.path.join(clone, ".venv/lib/python3.11/site-packages/orbax/checkpoint/manager.py"),
    "/home/u/privjax/.venv/lib/python3.11/site-packages/jax/_src/xla_bridge.py",
    "/home/u/privjax/privjax_extra/x.py",
  ):
    rec = logging.LogRecord("absl", logging.INFO, path, 1, "CheckpointManager created", None, None)
    assert not quiet.filter(rec), path
