"""The encoder / optim / hybrid / PTI table: ``faceedit bench inversion --methods ...``.

Kept as a script for the GPU machine's job files; the code is ``faceedit.bench_methods``.
"""
from faceedit.bench_methods import main

if __name__ == "__main__":
    main()
