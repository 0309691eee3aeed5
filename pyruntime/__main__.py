"""python -m pyruntime info | demo | bench MODEL.onnx [--compare onnxruntime,openvino] [--batch N] [--threads N]."""
from __future__ import annotations

import argparse
import sys


def _info() -> int:
    import pyruntime

    info = pyruntime.cpu_info()
    print(f"CPU        {info['vendor']} {info['model']}")
    print(f"cores      {info['cores']} usable by this process")
    print(f"flags      {' '.join(info['flags'])}")
    print(f"available  {', '.join(info['available'])}")
    print(f"selected   {info['isa']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyruntime")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the CPU, its flags and the ISA paths")
    d = sub.add_parser("demo", help="the shipped early-exit student on the Fashion-MNIST test set")
    d.add_argument("--out", default="results/demo", help="where to save the plot")
    d.add_argument("--n", type=int, default=None, help="use the first N test images")
    d.add_argument("--threads", type=int, default=1)
    b = sub.add_parser("bench", help="latency of a model: first run, mean, p50, p90, p99, throughput")
    b.add_argument("model")
    b.add_argument("--compare", default="", help="comma-separated peers: onnxruntime,openvino")
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--seconds", type=float, default=2.0)
    b.add_argument("--json", help="also write the results to this JSON file")
    b.add_argument("--no-exits", action="store_true", help="run the full graph of an early-exit model")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    if args.command == "demo":
        from .demo import run as demo

        demo(args.out, args.n, args.threads)
        return 0
    if args.command == "bench":
        from .benchmark import run

        run(args.model, compare=[c for c in args.compare.split(",") if c], batch=args.batch, threads=args.threads,
            seconds=args.seconds, json_path=args.json, exits=not args.no_exits)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
