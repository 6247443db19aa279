"""Tests of the pretext ops (rotate, patches, jigsaw, RPL, exemplar), specs."""
import numpy as np
import pytest
import tensorflow as tf

from selfsup import preprocess as pp
import selfsup.tasks


def _image(h=16, w=16, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _coords(h, w):
  """Float image whose pixel (y, x) is (y, x, 0): patches tell their origin."""
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([y, x, np.zeros_like(y)], -1).astype(np.float32)


def _run(spec, features, training=True):
  """Runs `spec` eagerly and in tf.data; returns (eager, graph) as numpy."""
  fn = pp.get(spec, training)
  eager = {k: np.asarray(v) for k, v in fn(features).items()}
  dataset = tf.data.Dataset.from_tensors(features).map(fn)
  for key, spec_ in dataset.element_spec.items():  # Static shapes in tf.data.
    assert spec_.shape.is_fully_defined(), (key, spec_.shape)
  graph = {k: v.numpy() for k, v in next(iter(dataset)).items()}
  assert sorted(eager) == sorted(graph)
  for key in eager:
    assert eager[key].shape == graph[key].shape, key
    assert eager[key].dtype == graph[key].dtype, key
  return eager, graph


def _tile(patches, grid=3):
  rows = [np.concatenate(list(patches[r * grid:(r + 1) * grid]), axis=1)
          for r in range(grid)]
  return np.concatenate(rows, axis=0)


def test_rotate_matches_np_rot90():
  image = _image(6, 6)
  for out in _run("rotate", {"image": image, "label": np.int64(7)}):
    assert out["image"].shape == (4, 6, 6, 3)
    np.testing.assert_array_equal(out["label"], [0, 1, 2, 3])
    assert out["label"].dtype == np.int32 and out["class_label"] == 7
    for k, label in enumerate(out["label"]):
      np.testing.assert_array_equal(out["image"][k], np.rot90(image, label))


def test_rotate_rejects_non_square():
  with pytest.raises(ValueError, match=r"'rotate'.*square"):
    pp.get("rotate", True)({"image": _image(6, 8)})


def test_crop_patches_without_jitter_tiles_the_image():
  image = _image(15, 15)
  for training in (True, False):
    for out in _run("crop_patches(3)", {"image": image}, training):
      assert out["image"].shape == (9, 5, 5, 3)
      np.testing.assert_array_equal(_tile(out["image"]), image)


def test_crop_patches_places_patches_in_their_cells():
  image = _coords(48, 48)  # Cells of 16, patches of 12, so offsets 0..4.
  offsets = set()
  for seed in range(3):
    for out in _run("crop_patches(3, 4)",
                    {"image": image, "_seed": np.array([seed, 9], np.int64)}):
      patches = out["image"]
      assert patches.shape == (9, 12, 12, 3)
      for index, patch in enumerate(patches):
        row, col = divmod(index, 3)
        y0, x0 = int(patch[0, 0, 0]), int(patch[0, 0, 1])
        assert 16 * row <= y0 <= 16 * row + 4 and 16 * col <= x0 <= 16 * col + 4
        np.testing.assert_array_equal(patch, image[y0:y0 + 12, x0:x0 + 12])
        offsets.add((y0 - 16 * row, x0 - 16 * col))
  assert len(offsets) > 5  # Random gaps, not one fixed placement.
  for out in _run("crop_patches(3, patch=12)", {"image": image}, False):
    np.testing.assert_array_equal(out["image"][4], image[18:30, 18:30])


@pytest.mark.parametrize("spec", ["crop(48)|crop_patches(3, patch=17)",
                                  "crop(48)|crop_patches(3, 16)"])
def test_patch_larger_than_cell_raises_quoting_spec(spec):
  fn = pp.get(spec, True)
  with pytest.raises(ValueError, match="larger than its cell") as info:
    fn({"image": _image(50, 50)})
  assert repr(spec) in str(info.value)
  with pytest.raises(ValueError, match="larger than its cell"):
    tf.data.Dataset.from_tensors({"image": _image(50, 50)}).map(fn)


def test_crop_patches_needs_static_size():
  fn = pp.get("decode|crop_patches(3)", True)
  encoded = tf.io.encode_png(_image(30, 30))  # Decoding loses the shape.
  dataset = tf.data.Dataset.from_tensors({"image": encoded})
  with pytest.raises(ValueError, match="static image size"):
    dataset.map(fn)


def test_permutations_load_as_100_distinct_permutations_of_0_to_8():
  perms = pp.load_permutations()
  assert perms.shape == (100, 9) and perms.dtype == np.int32
  assert all(sorted(row) == list(range(9)) for row in perms.tolist())
  assert len({tuple(row) for row in perms.tolist()}) == 100
  # The file counts from 1: its first row is 8 7 6 9 5 4 3 2 1.
  assert perms[0].tolist() == [7, 6, 5, 8, 4, 3, 2, 1, 0]
  perms[0] = 0  # Callers get a copy.
  assert pp.load_permutations()[0, 0] == 7


def _write(path, header, values):
  path.write_bytes(np.array(list(header) + list(values), "<i4").tobytes())
  return path


@pytest.mark.parametrize("header,values,match", [
    ((2, 3), [1, 2, 3, 3, 2], "needs 32 bytes"),
    ((2, 3), [1, 2, 3, 1, 1, 2], "row 1 .* not a permutation"),
    ((2, 3), [0, 1, 2, 1, 2, 3], "row 0 .* not a permutation"),
    ((2, 3), [1, 2, 3, 1, 2, 3], "not distinct"),
])
def test_bad_permutation_files_raise(tmp_path, header, values, match):
  path = _write(tmp_path / "perms.bin", header, values)
  with pytest.raises(ValueError, match=match):
    pp.load_permutations(path)
  good = _write(tmp_path / "good.bin", (2, 3), [1, 2, 3, 3, 1, 2])
  assert pp.load_permutations(good).tolist() == [[0, 1, 2], [2, 0, 1]]


def test_jigsaw_inverse_permutation_restores_the_crop():
  image = _image(12, 12)
  perms = pp.load_permutations()
  for out in _run("crop_patches(3)|jigsaw(16)",
                  {"image": image, "_seed": np.array([1, 2], np.int64)}):
    assert out["image"].shape == (16, 9, 4, 4, 3)
    labels = out["label"]
    assert labels.dtype == np.int32 and len(set(labels.tolist())) == 16
    assert labels.min() >= 0 and labels.max() < 100
    for copy, label in zip(out["image"], labels):
      assert not np.array_equal(_tile(copy), image) or label == 0
      restored = copy[np.argsort(perms[label])]
      np.testing.assert_array_equal(_tile(restored), image)


def test_jigsaw_draws_per_image_and_is_fixed_in_eval():
  features = {"image": _image(12, 12)}
  fn = pp.get("crop_patches(3)|jigsaw(4)", True)
  draws = {tuple(fn(dict(features, _seed=np.array([s, 0], np.int64)))
                 ["label"].numpy()) for s in range(5)}
  assert len(draws) > 1
  again = fn(dict(features, _seed=np.array([3, 0], np.int64)))["label"]
  assert tuple(again.numpy()) in draws
  for out in _run("crop_patches(3)|jigsaw(4)", features, training=False):
    np.testing.assert_array_equal(out["label"], [0, 33, 66, 99])
  eval_all = pp.get("crop_patches(3)|jigsaw(100)", False)(features)
  np.testing.assert_array_equal(eval_all["label"], np.arange(100))


def test_jigsaw_shared_after_batching():
  images = np.stack([_image(12, 12, seed=s) for s in range(3)])
  per_example = pp.get("crop_patches(3)", True)
  batch_fn = pp.get("jigsaw_shared(8)", True)
  dataset = (tf.data.Dataset.from_tensor_slices(
      {"image": images, "label": np.arange(3, dtype=np.int64)})
             .map(per_example).batch(3).map(batch_fn))
  out = next(iter(dataset))
  assert out["image"].shape == (3, 8, 9, 4, 4, 3)
  labels = out["label"].numpy()
  assert labels.shape == (3, 8) and len(set(labels[0].tolist())) == 8
  assert (labels == labels[:1]).all()
  np.testing.assert_array_equal(out["class_label"], [0, 1, 2])
  perms = pp.load_permutations()
  for b in range(3):
    for copy, label in zip(out["image"].numpy()[b], labels[b]):
      np.testing.assert_array_equal(_tile(copy[np.argsort(perms[label])]),
                                    images[b])


def _seeded(image, seed):
  return {"image": image, "label": np.int64(3),
          "_seed": np.array([seed, 7], np.int64)}


@pytest.mark.parametrize("training", [True, False])
def test_jigsaw_unpermuted_format_describes_the_same_copies(training):
  perms = pp.load_permutations()
  for seed in range(3):
    features = _seeded(_image(12, 12, seed=seed), seed)
    permuted = _run("crop_patches(3, 1)|jigsaw(16)", features, training)
    plain = _run("crop_patches(3, 1)|jigsaw(16, permute=False)", features,
                 training)
    patches = _run("crop_patches(3, 1)", features, training)[0]["image"]
    for copies, unpermuted in zip(permuted, plain):
      assert unpermuted["image"].shape == (9, 3, 3, 3)
      # Same seed, same labels, and the same seed passed on downstream.
      np.testing.assert_array_equal(unpermuted["label"], copies["label"])
      assert unpermuted["label"].dtype == np.int32
      np.testing.assert_array_equal(unpermuted["_seed"], copies["_seed"])
      assert unpermuted["class_label"] == 3 and copies["class_label"] == 3
      # The patches are left in their row-major grid order.
      np.testing.assert_array_equal(unpermuted["image"], patches)
      for j, label in enumerate(unpermuted["label"]):
        np.testing.assert_array_equal(unpermuted["image"][perms[label]],
                                      copies["image"][j])
      np.testing.assert_array_equal(
          pp.pretext_ops.permute_patches(unpermuted["image"],
                                         unpermuted["label"]),
          copies["image"])


def _batched(spec, batch_spec, images, training=True):
  seeds = np.stack([[s, 11] for s in range(len(images))]).astype(np.int64)
  dataset = (tf.data.Dataset.from_tensor_slices(
      {"image": images, "_seed": seeds})
             .map(pp.get(spec, training)).batch(len(images))
             .map(pp.get(batch_spec, training)))
  return {k: v.numpy() for k, v in next(iter(dataset)).items()}


@pytest.mark.parametrize("training", [True, False])
def test_jigsaw_shared_unpermuted_format_describes_the_same_copies(training):
  images = np.stack([_image(12, 12, seed=s) for s in range(3)])
  permuted = _batched("crop_patches(3)", "jigsaw_shared(5)", images, training)
  plain = _batched("crop_patches(3)", "jigsaw_shared(5, permute=False)",
                   images, training)
  patches = _batched("crop_patches(3)", "", images, training)["image"]
  assert plain["image"].shape == (3, 9, 4, 4, 3)
  assert plain["label"].shape == (3, 5) and plain["label"].dtype == np.int32
  np.testing.assert_array_equal(plain["label"], permuted["label"])
  np.testing.assert_array_equal(plain["_seed"], permuted["_seed"])
  np.testing.assert_array_equal(plain["image"], patches)
  perms = pp.load_permutations()
  for b in range(3):
    for j, label in enumerate(plain["label"][b]):
      np.testing.assert_array_equal(plain["image"][b][perms[label]],
                                    permuted["image"][b, j])
  np.testing.assert_array_equal(
      pp.pretext_ops.permute_patches(plain["image"], plain["label"]),
      permuted["image"])


def test_permute_patches_on_embeddings_matches_numpy():
  rng = np.random.RandomState(0)
  embeddings = rng.normal(size=(2, 9, 5)).astype(np.float32)
  label = np.array([[3, 99, 0], [42, 3, 7]], np.int32)
  perms = pp.load_permutations()
  expected = np.stack([np.stack([e[perms[r]] for r in row])
                       for e, row in zip(embeddings, label)])
  out = pp.pretext_ops.permute_patches(embeddings, label)
  assert out.shape == (2, 3, 9, 5)
  np.testing.assert_array_equal(out, expected)
  # Works inside a compiled train step too (what a model does with it).
  compiled = tf.function(pp.pretext_ops.permute_patches, jit_compile=True)
  np.testing.assert_array_equal(compiled(embeddings, label), expected)
  with pytest.raises(ValueError, match=r"shape \[k\] or \[B, k\]"):
    pp.pretext_ops.permute_patches(embeddings, label[None])


@pytest.mark.parametrize("op", ["jigsaw(4, permute=0)",
                                "jigsaw_shared(4, permute='no')",
                                "relative_patch_location(pairs=None)"])
def test_format_flags_must_be_bools(op):
  with pytest.raises(ValueError, match="must be True or False"):
    pp.get(op, True)


def test_relative_patch_location_unpaired_format_describes_the_same_pairs():
  image = _coords(15, 15)
  paired = _run("crop_patches(3)|relative_patch_location", {"image": image})
  plain = _run("crop_patches(3)|relative_patch_location(pairs=False)",
               {"image": image})
  for pairs, unpaired in zip(paired, plain):
    assert unpaired["image"].shape == (9, 5, 5, 3)
    np.testing.assert_array_equal(unpaired["label"], pairs["label"])
    np.testing.assert_array_equal(unpaired["label"], np.arange(8))
    np.testing.assert_array_equal(_tile(unpaired["image"]), image)
    for l, label in enumerate(unpaired["label"]):
      np.testing.assert_array_equal(
          pairs["image"][l],
          unpaired["image"][[pp.NEIGHBOURS[label], 4]])
    np.testing.assert_array_equal(
        pp.pretext_ops.pair_patches(unpaired["image"]), pairs["image"])
  # Batched embeddings [B, 9, D] pair on axis 1.
  embeddings = np.random.RandomState(1).normal(size=(2, 9, 4))
  out = pp.pretext_ops.pair_patches(embeddings, axis=1).numpy()
  assert out.shape == (2, 8, 2, 4)
  np.testing.assert_array_equal(out[:, :, 1], np.repeat(embeddings[:, 4:5], 8,
                                                        axis=1))
  np.testing.assert_array_equal(out[:, :, 0], embeddings[:, pp.NEIGHBOURS])


def test_relative_patch_location_labels_match_positions():
  image = _coords(15, 15)  # Cells and patches of 5.
  for out in _run("crop_patches(3)|relative_patch_location",
                  {"image": image}):
    assert out["image"].shape == (8, 2, 5, 5, 3)
    np.testing.assert_array_equal(out["label"], np.arange(8))
    for pair, label in zip(out["image"], out["label"]):
      neighbour, centre = pair[:, 0, 0, :2]
      np.testing.assert_array_equal(centre, [5, 5])
      dy, dx = pp.RELATIVE_POSITIONS[label]
      np.testing.assert_array_equal(neighbour - centre, [5 * dy, 5 * dx])
  assert pp.RELATIVE_POSITIONS[1] == (-1, 0)  # "above" is label 1.


def test_exemplar_makes_distinct_copies():
  spec = "exemplar(3, spec='inception_crop(8)|flip_lr|value_range(0, 1)')"
  features = {"image": _image(20, 24), "label": np.int64(5),
              "_seed": np.array([4, 4], np.int64)}
  eager, graph = _run(spec, features)
  for out in (eager, graph):
    assert out["image"].shape == (3, 8, 8, 3)
    assert out["image"].dtype == np.float32
    assert "label" not in out and out["class_label"] == 5
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert not np.array_equal(out["image"][0], out["image"][1])
  np.testing.assert_array_equal(eager["image"], graph["image"])
  for out in _run(spec, features, training=False):
    np.testing.assert_array_equal(out["image"][0], out["image"][2])


PATCH = (12, 12, 3)


@pytest.mark.parametrize("task,kwargs,shape,label_shape", [
    ("rotation", {"size": 16}, (2, 4, 16, 16, 3), (2, 4)),
    ("supervised", {"size": 16}, (2, 16, 16, 3), (2,)),
    ("exemplar", {"size": 16, "copies": 4, "gray_p": 0.5},
     (2, 4, 16, 16, 3), None),
    ("jigsaw", {"crop": 48, "patch": 12}, (2, 9) + PATCH, (2, 16)),
    ("jigsaw", {"crop": 48, "patch": 12, "permute_images": True},
     (2, 16, 9) + PATCH, (2, 16)),
    ("jigsaw", {"crop": 48, "patch": 12, "shared_perms": 8,
                "gray_per_patch": True}, (2, 9) + PATCH, (2, 8)),
    ("jigsaw", {"crop": 48, "patch": 12, "shared_perms": 8,
                "permute_images": True}, (2, 8, 9) + PATCH, (2, 8)),
    ("relative_patch_location", {"crop": 48, "patch": 12}, (2, 9) + PATCH,
     (2, 8)),
    ("relative_patch_location", {"crop": 48, "patch": 12,
                                 "pair_images": True}, (2, 8, 2) + PATCH,
     (2, 8)),
])
def test_small_task_specs_run_in_tf_data(task, kwargs, shape, label_shape):
  specs = selfsup.tasks.TASKS.lookup(task)[0].pretext_specs(**kwargs)
  batch = 2
  images = np.stack([_image(40, 56, seed=s) for s in range(batch)])
  for mode in ("train", "eval"):
    training = mode == "train"
    dataset = (tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": np.arange(batch, dtype=np.int64)})
               .map(pp.get(specs[mode], training)).batch(batch)
               .map(pp.get(specs["batch"], training)))
    out = next(iter(dataset))
    assert out["image"].shape == shape and out["image"].dtype == tf.float32
    assert np.all(np.isfinite(out["image"].numpy()))
    if label_shape is None:
      assert "label" not in out
    else:
      assert out["label"].shape == label_shape


def test_default_patch_specs_use_the_efficient_formats():
  jigsaw = selfsup.tasks.Jigsaw.pretext_specs()
  assert jigsaw["train"] == (
      "decode|resize(292)|crop(255)|to_gray(0.333333)|crop_patches(3, 21)"
      "|standardize|jigsaw(16, permute=False)")
  assert jigsaw["eval"].endswith("|standardize|jigsaw(16, permute=False)")
  rpl = selfsup.tasks.RelativePatchLocation.pretext_specs()
  assert rpl["train"].endswith("|relative_patch_location(pairs=False)")
  old = selfsup.tasks.Jigsaw.pretext_specs(permute_images=True)
  assert old["train"].endswith("|standardize|jigsaw(16)")
  shared = selfsup.tasks.Jigsaw.pretext_specs(shared_perms=8)
  assert shared["batch"] == "jigsaw_shared(8, permute=False)"
  assert selfsup.tasks.RelativePatchLocation.pretext_specs(
      pair_images=True)["train"].endswith(
          "|standardize|relative_patch_location")


@pytest.mark.parametrize("task,kwargs", [
    ("relative_patch_location", {"permute_images": True}),
    ("relative_patch_location", {"shared_perms": 8}),
    ("jigsaw", {"pair_images": True}),
])
def test_patch_spec_options_of_the_other_task_raise(task, kwargs):
  with pytest.raises(ValueError, match="takes no spec argument"):
    selfsup.tasks.get(task, backbone="resnet18_v2", width=0.25,
                      image_size=12, spec_kwargs=dict(kwargs, crop=48))


def test_small_representation_specs_give_standardized_patches():
  specs = selfsup.tasks.Jigsaw.evaluation_specs(12)
  assert specs["eval"] == (
      "decode|resize(48)|central_crop(36)|crop_patches(3)|standardize")
  for out in _run(specs["eval"], {"image": _image(40, 56)}, training=False):
    assert out["image"].shape == (9, 12, 12, 3)
    np.testing.assert_allclose(out["image"].mean(axis=(1, 2, 3)), 0, atol=1e-5)
  whole = selfsup.tasks.Rotation.evaluation_specs(32)
  for out in _run(whole["train"], {"image": _image(40, 56)}):
    assert out["image"].shape == (32, 32, 3)
    assert -1 <= out["image"].min() and out["image"].max() <= 1
