"""``python -m curation.sample OUT_DIR [--n-pages N] [--seed S] [--image-base-url URL]``."""
from curation.sample.generate import main

main()
