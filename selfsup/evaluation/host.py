"""Host-side helpers of the feature path: aligned buffers, background work.

One place for what the feature cache (`features`), the feature export
(`extract`) and the L-BFGS fit (`lbfgs`) each needed: arrays whose memory
TensorFlow can share, and an iterator that produces its items in a thread
so that reading overlaps compute.
"""
import queue
import threading

import numpy as np
import tensorflow as tf

# TF's CPU kernels (Eigen) require tensor data aligned to this many bytes.
ALIGN = 64


def aligned_empty(shape, dtype=np.float32, zeros: bool = False) -> np.ndarray:
  """An uninitialised (or zero, from calloc: its pages become resident only
  when written) C-contiguous array whose data is ALIGN-byte aligned, so
  that TensorFlow can use it without a copy."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  buf = (np.zeros if zeros else np.empty)(nbytes + ALIGN, np.uint8)
  offset = (-buf.ctypes.data) % ALIGN
  return buf[offset:offset + nbytes].view(dtype).reshape(shape)


def host_tensor(array: np.ndarray) -> tf.Tensor:
  """A CPU tensor over `array`'s own memory, or over one aligned copy.

  `tf.constant` would copy a 2 GB array twice on the way in. DLPack shares the
  buffer instead, but TF's kernels abort on data that is not aligned to
  ALIGN bytes, and numpy's large arrays usually are not: those (and
  read-only ones, which numpy will not export) are staged once.
  """
  if not (array.flags.c_contiguous and array.flags.writeable
          and array.ctypes.data % ALIGN == 0):
    staged = aligned_empty(array.shape, array.dtype)
    staged[...] = array
    array = staged
  return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def put(items, item, stop, dropped=lambda: False) -> bool:
  """Puts `item` on the queue `items` unless `stop` is set (or `dropped()`
  says nobody reads it any more, which counts as put); whether it went."""
  while not stop.is_set():
    if dropped():
      return True
    try:
      items.put(item, timeout=0.1)
      return True
    except queue.Full:
      pass
  return False


def drain(items):
  """Yields the `(True, item)` entries of the queue `items` until a
  `(False, error_or_None)` entry ends them, raising the error."""
  while True:
    ok, item = items.get()
    if not ok:
      if item is not None:
        raise item
      return
    yield item


def in_background(iterable, depth: int, name: str = "selfsup-background"):
  """Yields the items of `iterable`, produced up to `depth` ahead in a thread.

  An exception in the producer is raised here, at the item it replaced.
  Closing this generator early (an error in the consumer) stops the producer
  after the item it is working on. `depth` 0 produces in this thread.
  """
  if depth < 1:
    yield from iterable
    return
  items = queue.Queue(depth)
  stop = threading.Event()

  def produce():
    it = iter(iterable)
    try:
      for item in it:
        if not put(items, (True, item), stop):
          return
      put(items, (False, None), stop)
    except BaseException as e:  # pylint: disable=broad-except
      put(items, (False, e), stop)
    finally:  # a generator is closed in the thread that ran it
      getattr(it, "close", lambda: None)()

  thread = threading.Thread(target=produce, daemon=True, name=name)
  thread.start()
  try:
    yield from drain(items)
  finally:
    stop.set()
    thread.join()
