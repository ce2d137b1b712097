"""``python3 -m remote_agent`` is the same program as the ``orchesjob`` console script."""

from remote_agent.frontends.cli import main

if __name__ == "__main__":
    main()
