"""medgen demo"""

HELP = ("Try every task on phantoms: phantom data -> a short CPU run of each task -> the local MLflow store "
        "(about 10 minutes on 2 cores).")


def add_arguments(p):
    p.add_argument("--out", default="demo", help="folder for phantoms and checkpoints (default: ./demo)")
    p.add_argument("--subjects", type=int, default=6, help="phantom subjects (default: 6)")
    p.add_argument("--size", type=int, default=48, help="phantom volume size in voxels (default: 48)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the phantoms and the runs (default: 0)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (default: every task built)")


def run(args) -> int:
    from medgen.demo import run_demo

    runs = run_demo(args.out, subjects=args.subjects, size=args.size, seed=args.seed, tasks=args.tasks)
    for task, run_id in runs.items():
        print(f"{task}\t{run_id}")
    return 0
