"""KServe's storage initializer, as the emulator runs it in a pod: copy every object under the
`s3://` URI (argv 1) into the mounted folder (argv 2), with only the credentials and endpoint in
its environment (what KServe's credential builder sets from the service account's secret). The
folder is the pod's emptyDir mount: written into, never swapped."""

import sys

from container_component_src import storage


def main(uri: str, folder: str) -> None:
    fs, path = storage.filesystem(uri)
    found = fs.find(path)
    if not found:
        raise SystemExit(f"storage initializer: nothing at {uri}")
    for key in found:
        fs.get(key, f"{folder}/{key[len(path.rstrip('/')) + 1 :]}")
    print(f"copied {len(found)} objects from {uri} to {folder}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
