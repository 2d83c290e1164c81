"""logger.py: the log files in the original's formats ("itr: value" lines per metric in
<exp>/<metric>.log, one JSON record with its _stamp per line of <exp>_log.jsonl, metalog.txt), fresh
logs deleting old ones and resumed ones appending, TrainLog writing only at its intervals and at
close, resume cutting the logs back, failed writes that leave no half line."""
import datetime
import errno
import json
import os
import time

import pytest
import torch

import logger
from conftest import failing_replace
from errors import UserError


# ---------------------------------------------------------------------------------------------
# The original's formats
# ---------------------------------------------------------------------------------------------


def test_metric_logs_are_itr_colon_value_lines_in_the_logstyle(tmp_path, capsys):
  folder = tmp_path / 'exp'
  log = logger.MyLogger(str(folder), logstyle='%3.3e')
  log.log(1, G_loss=0.5, D_loss_real=torch.tensor(-1.25))
  log.log_rows([(2, {'G_loss': 0.25}), (3, {'G_loss': 1234.5, 'G_blocks_0_0_conv1_sv0': 2.0})])
  assert (folder / 'G_loss.log').read_text() == '1: 5.000e-01\n2: 2.500e-01\n3: 1.234e+03\n'
  assert (folder / 'D_loss_real.log').read_text() == '1: -1.250e+00\n'
  assert (folder / 'G_blocks_0_0_conv1_sv0.log').read_text() == '3: 2.000e+00\n'
  # A resumed run appends; a fresh one deletes each old log the first time it writes that metric
  # (saying so, but not for the many singular-value logs).
  logger.MyLogger(str(folder), logstyle='%3.3f').log(4, G_loss=0.125)
  assert (folder / 'G_loss.log').read_text().endswith('3: 1.234e+03\n4: 0.125\n')
  capsys.readouterr()
  fresh = logger.MyLogger(str(folder), reinitialize=True)
  fresh.log(1, G_loss=0.75, G_blocks_0_0_conv1_sv0=3.0)
  fresh.log(2, G_loss=0.5)
  assert (folder / 'G_loss.log').read_text() == '1: 0.750\n2: 0.500\n'  # default %3.3f
  assert (folder / 'G_blocks_0_0_conv1_sv0.log').read_text() == '1: 3.000\n'
  assert (folder / 'D_loss_real.log').exists()  # not logged by the fresh run: left alone
  assert capsys.readouterr().out == '%s exists, deleting...\n' % (folder / 'G_loss.log')


def test_a_logstyle_that_is_no_number_format_is_a_user_error(tmp_path):
  for style in ('%s %s', 'plain', '%3.3q'):
    with pytest.raises(UserError, match='--logstyle .* is not a number format; use e.g. %3.3e'):
      logger.MyLogger(str(tmp_path / 'exp'), logstyle=style)


def test_the_jsonl_holds_one_record_per_line_with_its_stamp(tmp_path, capsys):
  path = tmp_path / 'exp_log.jsonl'
  path.write_text('{"itr": 0}\n')  # an earlier run's
  log = logger.MetricsLogger(str(path))  # resumed: appends
  start = time.time()
  log.log(itr=2, IS_mean=1.5, IS_std=0.25, FID=80.0)
  log.log({'itr': 4, 'IS_mean': 2.5}, note='\u00e9')
  end = time.time()
  lines = path.read_text().splitlines()
  assert lines[0] == '{"itr": 0}' and all(line.isascii() for line in lines)
  records = [json.loads(line) for line in lines[1:]]
  assert [list(r) for r in records] == [['itr', 'IS_mean', 'IS_std', 'FID', '_stamp'],
                                        ['itr', 'IS_mean', 'note', '_stamp']]
  assert records[1]['note'] == '\u00e9' and records[0]['FID'] == 80.0
  assert start <= records[0]['_stamp'] <= records[1]['_stamp'] <= end
  capsys.readouterr()
  logger.MetricsLogger(str(path), reinitialize=True)  # a fresh run starts an empty file
  assert not path.exists()
  assert capsys.readouterr().out == '%s exists, deleting...\n' % path


def test_metalog_records_when_the_config_and_the_state(tmp_path):
  before = datetime.datetime.now()
  logger.write_metadata(str(tmp_path), 'exp', {'G_lr': 5e-05}, {'itr': 3, 'config': {'x': 1}})
  lines = (tmp_path / 'exp' / 'metalog.txt').read_text().splitlines()
  assert len(lines) == 3 and lines[0].startswith('datetime: ')
  assert before <= datetime.datetime.fromisoformat(lines[0][len('datetime: '):]) \
      <= datetime.datetime.now()
  assert lines[1:] == ["config: {'G_lr': 5e-05}", "state: {'itr': 3}"]  # the config once


# ---------------------------------------------------------------------------------------------
# Buffered training logs
# ---------------------------------------------------------------------------------------------


def test_train_log_writes_at_its_intervals_and_at_close(tmp_path, capsys):
  """The loop hands over tensors each iteration; nothing is read from them or written until the
  interval is full, then every buffered iteration is, in order, and close() writes the rest."""
  folder = tmp_path / 'exp'
  train_log = logger.TrainLog(logger.MyLogger(str(folder)), interval=3, total=10, start_itr=0)
  weight = torch.tensor(2.0, requires_grad=True)
  for itr in (1, 2):
    assert train_log.add(itr, {'G_loss': weight * itr, 'lr': 0.5}) is None
  assert not os.path.exists(folder / 'G_loss.log') and capsys.readouterr().out == ''
  rows = train_log.add(3, {'G_loss': weight * 3, 'lr': 0.5, 'G_x_sv0': torch.tensor(7.0)})
  assert rows == [(1, {'G_loss': 2.0, 'lr': 0.5}), (2, {'G_loss': 4.0, 'lr': 0.5}),
                  (3, {'G_loss': 6.0, 'lr': 0.5, 'G_x_sv0': 7.0})]
  assert (folder / 'G_loss.log').read_text() == '1: 2.000\n2: 4.000\n3: 6.000\n'
  shown = capsys.readouterr().out
  assert shown.startswith('\ritr 3/10 (30%) ') and shown.endswith(
      '| G_loss : +6.000, lr : +0.500')  # the last row, singular values left out
  assert train_log.add(4, {'G_loss': weight * 4, 'lr': 0.5}) is None
  train_log.close()
  assert (folder / 'G_loss.log').read_text().splitlines()[-1] == '4: 8.000'
  assert (folder / 'lr.log').read_text().count('\n') == 4
  assert capsys.readouterr().out.endswith('| G_loss : +8.000, lr : +0.500\n')
  assert train_log.flush() == []


def test_format_seconds():
  assert logger.format_seconds(3725.9) == '1:02:05'
  assert logger.format_seconds(59) == '0:00:59' and logger.format_seconds(-3) == '0:00:00'
  assert logger.format_seconds(100 * 3600) == '100:00:00'


# ---------------------------------------------------------------------------------------------
# Disk errors and resume
# ---------------------------------------------------------------------------------------------


def test_a_failed_log_write_leaves_no_half_line(tmp_path, monkeypatch):
  jsonl = str(tmp_path / 'exp_log.jsonl')
  metrics = logger.MetricsLogger(jsonl)
  metrics.log(itr=1, IS_mean=2.0)
  train_log = logger.MyLogger(str(tmp_path / 'exp'))
  train_log.log(1, G_loss=0.5)
  before = (open(jsonl).read(), open(tmp_path / 'exp' / 'G_loss.log').read())
  real_write = os.write

  def write_half_then_fill_the_disk(fd, data):
    if len(data) > 1:
      return real_write(fd, bytes(data[:len(data) // 2]))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, 'write', write_half_then_fill_the_disk)
  with pytest.raises(UserError, match='could not write the log .*exp_log.jsonl .the disk is full'):
    metrics.log(itr=2, IS_mean=3.0)
  with pytest.raises(UserError, match='could not write the log .*G_loss.log .the disk is full'):
    train_log.log(2, G_loss=0.25)
  monkeypatch.undo()
  assert (open(jsonl).read(), open(tmp_path / 'exp' / 'G_loss.log').read()) == before

  def no_permission(path, *args):
    raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
  monkeypatch.setattr(os, 'open', no_permission)
  with pytest.raises(UserError, match='could not open the log .*D_loss.log .Permission denied'):
    train_log.log(2, D_loss=0.25)



def test_resume_cuts_logs_back_and_drops_a_line_cut_short(tmp_path, monkeypatch):
  jsonl = tmp_path / 'exp_log.jsonl'
  jsonl.write_text('{"itr": 1}\n{"itr": 2}\n{"itr": 3}\n{"it')  # killed inside a write
  folder = tmp_path / 'exp'
  folder.mkdir()
  (folder / 'G_loss.log').write_text('1: 0.5\n2: 0.4\n3: 0.3\n4: 0.')
  failing_replace(monkeypatch, 1)
  with pytest.raises(UserError, match='could not rewrite the log .*exp_log.jsonl .the disk is '
                                      'full'):
    logger.MetricsLogger(str(jsonl)).truncate(2)
  monkeypatch.undo()
  assert jsonl.read_text().endswith('{"it') and sorted(os.listdir(tmp_path)) == [
      'exp', 'exp_log.jsonl']  # untouched, no temporary left
  logger.MetricsLogger(str(jsonl)).truncate(2)
  logger.MyLogger(str(folder)).truncate(3)
  assert jsonl.read_text() == '{"itr": 1}\n{"itr": 2}\n'
  assert (folder / 'G_loss.log').read_text() == '1: 0.5\n2: 0.4\n3: 0.3\n'

