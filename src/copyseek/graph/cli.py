"""`copyseek dedup`: the graph's sub-command on a folder (assembled by copyseek.cli). `copyseek label`
works on an index, so it lives with the index, in copyseek.store.cli."""

from __future__ import annotations

import argparse



def add_parser(sub) -> None:
    add_dedup_parser(sub)


def add_dedup_parser(sub) -> None:
    from copyseek.graph.dedup import KEEP_POLICIES, DedupParams
    from copyseek.graph.folders import MIN_COVER, PDQ_MATCH_DISTANCE

    p = sub.add_parser(
        "dedup",
        help="find groups of near-duplicates and edited copies in a folder",
        description="Describe every image below FOLDER, link each to its nearest neighbours, verify "
        "doubtful links with local features (and PDQ hashes with --hash-distance), and write the groups: "
        "OUTPUT as imagededup's JSON "
        "({path: [[duplicate, score], ...]}, paths relative to FOLDER, every image a key), "
        "OUTPUT's .groups.csv (group,path,confidence,keep), OUTPUT's .skipped.csv (path,reason) when "
        "some files cannot be read, and a contact sheet with --plot. "
        "A dry run unless --move-to is given: nothing is moved or deleted.",
    )
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--output", required=True, metavar="GROUPS.json")
    p.add_argument("--plot", metavar="GROUPS.png", help="contact sheet of the largest groups")
    p.add_argument("--keep", choices=KEEP_POLICIES, default="largest", help="which image of a group stays (default largest)")
    p.add_argument("--move-to", metavar="DIR", help="move the images not kept there (default: move nothing)")
    p.add_argument("--k", type=int, default=DedupParams.k, help=f"neighbours per image (default {DedupParams.k})")
    p.add_argument("--accept", type=float, default=DedupParams.accept, help=f"cosine that makes a duplicate without verification (default {DedupParams.accept})")
    p.add_argument("--candidate", type=float, default=DedupParams.candidate, help=f"cosine from which a pair is verified locally (default {DedupParams.candidate})")
    p.add_argument("--min-cover", type=float, default=MIN_COVER, metavar="SHARE",
                   help=f"a local verification confirms a pair only if its inliers span this share of both images "
                   f"(default {MIN_COVER}: a shared emoji or caption matches in a small patch)")
    p.add_argument("--merge-limit", type=int, default=DedupParams.merge_limit, metavar="N",
                   help="a verified doubtful pair joins two groups only if one has at most N images "
                   f"(default {DedupParams.merge_limit}; 0: no limit, plain connected components)")
    p.add_argument("--no-verify", action="store_true", help="no verification: pairs under --accept are dropped")
    p.add_argument("--hash-distance", type=int, metavar="BITS",
                   help="also confirm a doubtful pair whose PDQ hashes differ by at most BITS of 256 "
                   f"({PDQ_MATCH_DISTANCE} is ThreatExchange's match threshold): more pairs found, some groups "
                   "merged wrongly (default: local features alone)")
    p.add_argument("--model", default="sscd", help="global model (default sscd)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_dedup)


def run_dedup(args: argparse.Namespace) -> int:
    from copyseek.graph.dedup import DedupParams
    from copyseek.graph.folders import dedup_folder

    report = dedup_folder(
        args.folder,
        args.output,
        params=DedupParams(k=args.k, accept=args.accept, candidate=args.candidate, merge_limit=args.merge_limit),
        plot=args.plot,
        keep=args.keep,
        move_to=args.move_to,
        verify=not args.no_verify,
        min_cover=args.min_cover,
        hash_distance=args.hash_distance,
        model=args.model,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(report.summary())
    for path in report.outputs:
        print(f"written: {path}")
    return 0
