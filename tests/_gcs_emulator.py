"""gcp-storage-emulator for tests/test_gcs.py, serving media downloads with the generation headers
real GCS sends (`x-goog-generation`, `x-goog-metageneration`): tensorstore (under orbax) reads an
object's generation from them, and without them fails on the OCDBT manifest of any checkpoint with
more than a few arrays ("Malformed StorageGeneration").

    python -m tests._gcs_emulator PORT      # 127.0.0.1:PORT, in memory, bucket `bkt`
"""
import sys
import time

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects


_download = objects.download


def download(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if response.status.value in (200, 206):
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))


def main(port: int) -> None:
  objects.download = download  # the JSON API's ?alt=media GET calls it too
  for _, methods in server.HANDLERS:
    for method, handler in list(methods.items()):
      if handler is _download:
        methods[method] = download
  emulator = server.create_server("127.0.0.1", port, in_memory=True, default_bucket="bkt")
  emulator.start()
  while True:
    time.sleep(1)


if __name__ == "__main__":
  main(int(sys.argv[1]))
