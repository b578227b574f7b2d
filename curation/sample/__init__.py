"""Generated offline mini-crawl (SNAPSHOT=sample) with planted ground truth.

``generate_sample(out_dir, n_pages=300, seed=0, image_base_url=...)`` writes WARC files, images, a
clean COCO-caption split and ground truth (see :mod:`curation.sample.generate`);
``ImageServer(out_dir + "/images")`` serves the images over loopback.
"""
from curation.sample.generate import generate_sample
from curation.sample.server import ImageServer

__all__ = ["generate_sample", "ImageServer"]
