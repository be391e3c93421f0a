"""Entry point of the one-file binary built by packaging/localstore.spec."""

from localstore.cli import main

if __name__ == "__main__":
    main()
