"""shapes_classifier.py: the class-accuracy arithmetic, class matching by name and the cache."""
import os

import pytest
import torch
import torch.nn as nn

import datasets
import shapes_classifier
from errors import UserError

SHAPES = datasets.Shapes.read_class_names(None)

class CodeG(nn.Module):
  """A 'generator' whose images carry a class code in their first pixel: code[y] / 10."""
  dim_z = 3

  def __init__(self, code):
    super().__init__()
    self.code = torch.tensor(code, dtype=torch.float32)
    self.shared = lambda y: y
    self.weight = nn.Parameter(torch.zeros(()))

  def forward(self, z, y):
    out = torch.zeros(len(y), 3, 16, 16)
    out[:, 0, 0, 0] = self.code[y] / 10
    return out


class CodeReader(nn.Module):
  """A 'classifier' that reads the code back as a label."""

  def __init__(self):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(()))

  def forward(self, x):
    return nn.functional.one_hot(torch.round(x[:, 0, 0, 0] * 10).long(), 10).float()


def test_class_accuracy_counts_the_samples_labelled_with_their_own_class():
  # A run whose folder lists the classes in another order than Shapes does.
  names = sorted(SHAPES)
  labels = shapes_classifier.shapes_labels(names, 10)
  assert [SHAPES[i] for i in labels] == names
  right = CodeG(labels.tolist())
  result = shapes_classifier.class_accuracy(right, CodeReader(), labels, per_class=7)
  assert result['accuracy'] == 1.0 and result['per_class'] == [1.0] * 10
  # Half the classes drawn as their neighbour: those score 0, the rest 1.
  code = [int(labels[c if c % 2 else (c + 1) % 10]) for c in range(10)]
  result = shapes_classifier.class_accuracy(CodeG(code), CodeReader(), labels, per_class=7)
  assert result['accuracy'] == 0.5
  assert result['per_class'] == [0.0, 1.0] * 5
  assert 'lowest: %s 0.00' % names[0] in shapes_classifier.describe(result, names)
  with pytest.raises(UserError, match='needs the Shapes classes'):
    shapes_classifier.shapes_labels(['cat', 'dog'], 2)
  with pytest.raises(UserError, match='needs the Shapes classes'):
    shapes_classifier.shapes_labels(names[:9], 10)


def test_the_classifier_is_trained_once_then_read_from_its_cache(tmp_path, monkeypatch):
  trained = []

  def quick(resolution, log=print):
    trained.append(resolution)
    images, labels = shapes_classifier.shapes_images(resolution, 40, 1)
    return shapes_classifier.fit(images, labels, 10, epochs=1, batch_size=20, log=log), 0.5
  monkeypatch.setattr(shapes_classifier, 'train_shapes_classifier', quick)
  first = shapes_classifier.load_or_train(16, str(tmp_path))
  second = shapes_classifier.load_or_train(16, str(tmp_path))
  assert trained == [16] and os.path.exists(tmp_path / 'Shapes16_classifier.pth')
  x = shapes_classifier.shapes_images(16, 8, 3)[0]
  assert torch.equal(first(x), second(x)) and not first.training
  with pytest.raises(UserError, match='16 px or more'):
    shapes_classifier.load_or_train(8, str(tmp_path))
  # A cache written before 16 px images kept their resolution in the first stage is replaced.
  path = tmp_path / 'Shapes16_classifier.pth'
  saved = torch.load(path)
  del saved['first_stride']
  torch.save(saved, path)
  shapes_classifier.load_or_train(16, str(tmp_path))
  assert trained == [16, 16] and torch.load(path)['first_stride'] == 1


@pytest.mark.parametrize('resolution, first', [(16, 16), (24, 24), (32, 16), (64, 32)])
def test_the_first_stage_halves_images_of_32_px_and_more_only(resolution, first):
  model = shapes_classifier.SmallClassifier(10, resolution=resolution)
  x = torch.zeros(2, 3, resolution, resolution)
  assert model.stages[0](x).shape[-1] == first
  assert model(x).shape == (2, 10)
