"""Convert a video caption set's metadata file into mllm caption records (JSONL).

    mllm convert-data panda70m panda70m_training_2m.csv --out panda.jsonl --video-root videos/

Sets: sharegpt4video, llava_video_178k, panda70m, openvid_1m (data_cards/<set>.md says which file
and where the videos go). Rows that give no record are counted and the first few named.
"""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    from mllm.data.converters import CONVERTERS

    parser.add_argument("set", choices=sorted(CONVERTERS), help="which caption set the file comes from")
    parser.add_argument("source", help="the set's metadata file")
    parser.add_argument("--out", required=True, help="the JSONL records to write")
    parser.add_argument("--video-root", help="folder the set's video paths are relative to "
                        "(default: the metadata file's folder)")
    parser.add_argument("--limit", type=int, help="stop after this many records")


def run(args) -> int:
    from mllm.data.converters import convert

    try:
        report = convert(args.set, args.source, args.out, video_root=args.video_root, limit=args.limit)
    except (OSError, ValueError) as error:
        print(f"mllm convert-data: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {report.format()}")
    return 0
