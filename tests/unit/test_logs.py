"""What privjax prints: its own lines once, every warning."""


def test_quiet_keeps_privjax_lines_once_and_every_warning():
  import logging

  from privjax import logs

  quiet = logs.Quiet()

  def record(path, level, message):
    return logging.LogRecord("absl", level, path, 1, message, None, None)

  own = "/x/privjax/audit.py"
  assert quiet.filter(record(own, logging.INFO, "stage attacks ..."))
  assert not quiet.filter(record(own, logging.INFO, "stage attacks ..."))  # once
  assert not quiet.filter(record("/x/orbax/checkpoint/x.py", logging.INFO, "saved step 40"))
  assert quiet.filter(record("/x/jax/_src/xla_bridge.py", logging.WARNING, "no GPU"))
  assert quiet.filter(record(own, logging.WARNING, "a warning"))
  assert quiet.filter(record(own, logging.WARNING, "a warning"))  # warnings every time
