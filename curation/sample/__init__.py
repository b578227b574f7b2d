"""Generated offline mini-crawl (SNAPSHOT=sample) with planted ground truth."""
