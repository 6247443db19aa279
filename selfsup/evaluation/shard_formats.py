"""How one shard of a feature cache is laid out: TFRecord or raw records.

Each format is one object with everything that depends on the layout: the
file suffix, a writer, the format's own checks of a shard, a `tf.data`
reader and a chunked numpy reader. `selfsup.evaluation.features` picks one
by the metadata's `shard_format` (v1 caches: "tfrecord") and never branches
on it otherwise.

- "tfrecord": one `tf.train.Example` per example with `features` (bytes: the
  `dim` values in the stored dtype, little-endian) and `label` (int64).
- "raw": fixed-length records, each the `dim` values in the stored dtype
  followed by the label as int64, with no framing: read ~4x faster than
  TFRecords (no proto parsing), which matters when `lbfgs.fit` streams a
  split once per objective evaluation.
"""
import numpy as np
import tensorflow as tf

from selfsup.evaluation import host

_READ_BATCH = 1024


def np_dtype(name: str) -> np.dtype:
  """The numpy dtype of a stored dtype name (bfloat16 via TensorFlow's)."""
  if name == "bfloat16":
    return np.dtype(tf.bfloat16.as_numpy_dtype)
  return np.dtype(name).newbyteorder("<")


def record_bytes(dim: int, dtype: str) -> int:
  """Bytes per example of a raw shard: the features, then an int64 label."""
  return dim * np_dtype(dtype).itemsize + 8


def _float32_copy(rows: np.ndarray) -> np.ndarray:
  """An aligned float32 copy of `rows` (what TensorFlow can share)."""
  x = host.aligned_empty(rows.shape, np.float32)
  x[...] = rows
  return x


class _Raw:
  """Fixed-length records: the features, then an int64 label."""
  name = "raw"
  suffix = "raw"

  class Writer:
    """Appends records to a file."""

    def __init__(self, path):
      self._f = tf.io.gfile.GFile(path, "wb")

    def write_rows(self, x, y):
      rows = np.concatenate(
          [np.ascontiguousarray(x).view(np.uint8).reshape(len(x), -1),
           np.ascontiguousarray(y).view(np.uint8).reshape(len(y), 8)], axis=1)
      self._f.write(rows.tobytes())

    def close(self):
      self._f.close()

  def check_size(self, path, size, entry, dim, dtype, error):
    """The size must be that of the listed records."""
    expected = entry["num_examples"] * record_bytes(dim, dtype)
    if size != expected:
      raise error(
          f"Shard {path} has {size} bytes, not {entry['num_examples']} "
          f"records of {record_bytes(dim, dtype)} bytes ({dim}-dimensional "
          f"{dtype} features and an int64 label, from the metadata).")

  def check_content(self, path, dim, dtype, error):
    """Nothing beyond the size: records have no framing to check."""

  def dataset(self, path, dim, dtype):
    """(features [b, dim] float32, labels [b] int64) batches of a shard."""
    tf_dtype = tf.as_dtype(dtype)
    size = dim * tf_dtype.size

    def decode(records):
      features = tf.io.decode_raw(tf.strings.substr(records, 0, size),
                                  tf_dtype)
      labels = tf.io.decode_raw(tf.strings.substr(records, size, 8), tf.int64)
      return (tf.reshape(tf.cast(features, tf.float32), [-1, dim]),
              tf.reshape(labels, [-1]))

    ds = tf.data.FixedLengthRecordDataset(path, size + 8).batch(_READ_BATCH)
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)

  def chunks(self, paths, counts, rows, dim, dtype, error, recycle=0):
    """Yields (features [<= rows, dim] float32 aligned, labels int64) in
    order, `rows` at a time across shards (only the last chunk is short).
    Read without parsing: one read into a buffer, one strided conversion.

    `recycle` > 0 reuses that many feature buffers in turn (and one read
    buffer): a chunk's memory is overwritten `recycle` chunks later. Fresh
    buffers cost page faults on first touch, about as much as the copy into
    them (~1.5 ms per 4 MB); a streamed fit reads the split every
    evaluation, so it recycles.
    """
    rec = record_bytes(dim, dtype)
    store = np_dtype(dtype)
    width = dim * store.itemsize
    ring = [host.aligned_empty((rows, dim)) for _ in range(recycle)]
    record_buf = np.empty(rows * rec, np.uint8) if recycle else None
    records = _records(paths, counts, rec, error)
    next(records)
    total = sum(counts)
    try:
      for produced, start in enumerate(range(0, total, rows)):
        take = min(rows, total - start)
        buf = (record_buf[:take * rec] if recycle
               else np.empty(take * rec, np.uint8)).reshape(take, rec)
        records.send(buf.reshape(-1))
        x = (ring[produced % recycle][:take] if recycle
             else host.aligned_empty((take, dim)))
        x[...] = buf[:, :width].view(store)
        yield x, buf[:, width:].copy().view("<i8").reshape(take)
    finally:
      records.close()  # the open shard

class _TFRecord:
  """One `tf.train.Example` per example (v1 caches)."""
  name = "tfrecord"
  suffix = "tfrecord"

  class Writer:
    """Appends examples to a TFRecord file."""

    def __init__(self, path):
      self._writer = tf.io.TFRecordWriter(path)

    def write_rows(self, x, y):
      for features, label in zip(x, y):
        self._writer.write(_example(features, int(label)))

    def close(self):
      self._writer.close()

  def check_size(self, path, size, entry, dim, dtype, error):
    """Records have varying sizes: nothing to check."""

  def check_content(self, path, dim, dtype, error):
    """The first record's features have `dim` values."""
    first = next(iter(tf.data.TFRecordDataset(path).take(1))).numpy()
    raw = tf.train.Example.FromString(first).features.feature["features"]
    itemsize = np_dtype(dtype).itemsize
    got = (len(raw.bytes_list.value[0]) // itemsize if raw.bytes_list.value
           else 0)
    if got != dim:
      raise error(f"Shard {path} holds {got}-dimensional features, expected "
                  f"{dim} from the metadata.")

  def dataset(self, path, dim, dtype):
    """(features [b, dim] float32, labels [b] int64) batches of a shard; a
    record of the wrong size fails at iteration, naming the shard."""
    tf_dtype = tf.as_dtype(dtype)
    size = tf_dtype.size * dim

    def parse(serialized):
      parsed = tf.io.parse_example(serialized, {
          "features": tf.io.FixedLenFeature([], tf.string),
          "label": tf.io.FixedLenFeature([], tf.int64)})
      lengths = tf.strings.length(parsed["features"])
      check = tf.debugging.Assert(
          tf.reduce_all(tf.equal(lengths, size)),
          [f"feature bytes per example differ from {tf_dtype.size} * dim = "
           f"{size} (dim from the metadata) in shard", path, "got", lengths])
      with tf.control_dependencies([check]):
        features = tf.cast(tf.io.decode_raw(parsed["features"], tf_dtype),
                           tf.float32)
      return tf.reshape(features, [-1, dim]), parsed["label"]

    ds = tf.data.TFRecordDataset(path).batch(_READ_BATCH)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)

  def chunks(self, paths, counts, rows, dim, dtype, error, recycle=0):
    """Yields (features [<= rows, dim] float32 aligned, labels int64) in
    order, parsed through `dataset`; chunks straddle shards. Fresh buffers
    (`recycle` is ignored: parsing costs far more)."""
    del counts, recycle
    parts_x, parts_y, have = [], [], 0
    for path in paths:
      try:
        for xb, yb in self.dataset(path, dim, dtype):
          parts_x.append(xb.numpy())
          parts_y.append(yb.numpy())
          have += len(parts_y[-1])
          while have >= rows:
            xs, ys = np.concatenate(parts_x), np.concatenate(parts_y)
            yield _float32_copy(xs[:rows]), ys[:rows]
            parts_x, parts_y, have = [xs[rows:]], [ys[rows:]], have - rows
      except tf.errors.OpError as e:
        raise error(f"Shard {path} cannot be read: {e.message}") from e
    if have:
      yield _float32_copy(np.concatenate(parts_x)), np.concatenate(parts_y)

def _open(path):
  """A local file through Python's own io (it has `readinto`), else gfile."""
  if "://" in path:
    return tf.io.gfile.GFile(path, "rb")
  return open(path, "rb")  # pylint: disable=consider-using-with


def _records(paths, counts, rec, error):
  """A coroutine that fills each buffer sent to it with the next whole
  records of the shards, in order, across shard ends."""
  shards = iter(zip(paths, counts))
  f, path, count, left = None, None, 0, 0
  try:
    buf = yield
    while True:
      filled = 0
      while filled < len(buf):
        if not left:
          if f is not None:
            f.close()
          path, count = next(shards)
          f, left = _open(path), count
        n = min(left * rec, len(buf) - filled)
        if _read_into(f, buf[filled:filled + n]) != n:
          raise error(f"Shard {path} ended early: the metadata lists {count} "
                      f"examples.")
        filled, left = filled + n, left - n // rec
      buf = yield
  finally:
    if f is not None:
      f.close()


def _read_into(f, out: np.ndarray) -> int:
  """Reads up to len(out) bytes of `f` into `out`; how many it read."""
  if hasattr(f, "readinto"):
    return f.readinto(memoryview(out))
  data = f.read(len(out))
  out[:len(data)] = np.frombuffer(data, np.uint8)
  return len(data)


def _example(features: np.ndarray, label: int) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      "features": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[features.tobytes()])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  })).SerializeToString(deterministic=True)  # map order fixed: same bytes


FORMATS = {f.name: f for f in (_TFRecord(), _Raw())}
