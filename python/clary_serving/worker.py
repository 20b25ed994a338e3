"""A model-server worker: connects to the front end's socket, loads the model once, says whether
that worked, then answers batches of requests until the socket closes."""

import argparse
import os
import socket
import sys
import traceback


def main(argv=None):
    p = argparse.ArgumentParser(prog="clary_serving.worker")
    p.add_argument("--socket", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--code-dir", action="append", default=[])
    p.add_argument("--legacy", action="store_true")
    args = p.parse_args(argv)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    from .protocol import FrameReader, write_frame

    try:
        from .service import ModelService, Request

        service = ModelService(args.model_dir, args.code_dir, args.legacy)
    except BaseException as e:  # the reason must reach /ping and the endpoint's FailureReason
        text = f"{type(e).__name__}: {e}"
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        write_frame(sock, {"ready": False, "error": text, "traceback": traceback.format_exc()})
        return 1
    write_frame(sock, {"ready": True, "kind": service.kind, "fused": service.fused, "pid": os.getpid()})
    reader = FrameReader(sock)
    while True:
        try:
            header, bodies = reader.read()
        except EOFError:
            return 0
        reqs = [
            Request(body, item.get("ct"), item.get("accept"), item.get("ca"), item.get("shape"))
            for item, body in zip(header["items"], bodies)
        ]
        out_items, out_bodies = [], []
        for status, body, ctype, attrs in service.handle_batch(reqs):
            out_items.append({"status": status, "ct": ctype, "ca": attrs, "len": len(body)})
            out_bodies.append(body)
        write_frame(sock, {"items": out_items}, out_bodies)


if __name__ == "__main__":
    sys.exit(main())
