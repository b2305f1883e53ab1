#!/usr/bin/env python
"""Django's command-line utility; starts embedded servers when DATABASE_URL/REDIS_URL are unset."""

from searchsite.cli import main

if __name__ == "__main__":
    main()
