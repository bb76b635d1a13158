"""`python -m app.bench ...`: the bench without the rest of the CLI."""

import typer

from app.bench.command import bench


def main() -> None:
    typer.run(bench)


if __name__ == "__main__":
    main()
