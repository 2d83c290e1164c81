"""bench/gpu_report.sh without a GPU: it must exit 0 and write the report with every CUDA part
marked skipped; with --quick it runs the training bench once on the CPU at a toy size, which
checks the plumbing (flags, table, FLOP count, MFU) that the GPU run relies on."""
import os
import subprocess

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU fallback; a GPU runs the report')
def test_the_report_skips_cuda_parts_cleanly_without_a_gpu(tmp_path, repo_root):
  report = tmp_path / 'sub' / 'report.md'
  env = dict(os.environ, OMP_NUM_THREADS='1')
  result = subprocess.run(['bash', os.path.join(repo_root, 'bench', 'gpu_report.sh'), str(report),
                           '--quick'], capture_output=True, text=True, timeout=600, env=env,
                          cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-2000:]
  text = report.read_text()
  sections = [line for line in text.splitlines() if line.startswith('## ')]
  assert sections == ['## Environment', '## CUDA tests', '## Training speed', '## Glow',
                      '## Against the original']
  assert '- GPU: none visible (torch.cuda.is_available() is False)' in text
  assert '- Python ' in text and 'torchvision ' in text
  assert text.count('Skipped: no CUDA device.') == 3  # the tests, the training bench, Glow
  assert '### bench_glow.py on CUDA\n\nSkipped: no CUDA device.' in text
  assert '### bench_vs_original.py\n\nSkipped: no --original DIR given.' in text
  smoke = text.split('### bench_train.py, CPU smoke run (not a measurement)')[1]
  assert 'Exit status 0' in smoke and 'MFU' in smoke and '\nfp32 ' in smoke
  assert 'Model FLOPs per iteration' in smoke
  assert text.rstrip().splitlines()[-1].startswith('Report written in ')
  usage = subprocess.run(['bash', os.path.join(repo_root, 'bench', 'gpu_report.sh')],
                         capture_output=True, text=True)
  assert usage.returncode == 2 and usage.stderr.startswith('usage: ')
