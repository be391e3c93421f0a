"""`python -m localstore`: the same CLI as the `localstore` console script."""

from localstore.cli import main

# Guarded so that importing this module (tools that walk the package's modules) runs nothing.
if __name__ == "__main__":
    main()
