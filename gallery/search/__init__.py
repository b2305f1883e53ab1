"""Search: the query language, query vectors and the one-statement pgvector selector."""
