"""bench/bench_glow.py's ConvCalls: the convolutions a piece of work runs, recorded and replayed
alone (the ceiling its speed is compared with)."""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'bench'))
import bench_glow  # noqa: E402


def test_conv_calls_records_forward_and_backward_and_replays_the_same_calls():
  x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
  w1 = torch.randn(5, 3, 3, 3, requires_grad=True)
  w2 = torch.randn(4, 5, 1, 1, requires_grad=True)

  def work():
    y = F.relu(F.conv2d(x, w1, padding=1))
    (F.conv2d(y, w2) * 2).sum().backward()
  recorder = bench_glow.ConvCalls()
  with recorder:
    work()
  names = [func.__name__ for func, _, _ in recorder.calls]
  assert names.count('convolution.default') == 2
  assert names.count('convolution_backward.default') == 2
  inputs = [spec[0] for func, spec, _ in recorder.calls if func.__name__ == 'convolution.default']
  assert inputs[0][1] == (2, 3, 8, 8) and inputs[0][2] == x.stride()  # layout kept
  assert inputs[1][1] == (2, 5, 8, 8)
  # The replay runs exactly the recorded calls (shapes, strides, flags), nothing else.
  again = bench_glow.ConvCalls()
  replay = recorder.replayer()
  with again:
    replay()
  assert [(f, s, k) for f, s, k in again.calls] == recorder.calls
