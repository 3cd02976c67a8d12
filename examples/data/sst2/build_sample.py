"""Rebuild this sample from the full GLUE SST-2 files: python build_sample.py SST2_DIR.

train.tsv: 2,000 rows drawn with random.seed(13) from SST2_DIR/train.tsv;
test.tsv: SST2_DIR/test.tsv copied as is (the 872 labelled GLUE SST-2 dev sentences).
"""

import random
import shutil
import sys
from pathlib import Path

source, here = Path(sys.argv[1]), Path(__file__).parent
lines = (source / "train.tsv").read_text(encoding="utf-8").splitlines()
random.seed(13)
sample = random.sample(lines[1:], 2000)
(here / "train.tsv").write_text("\n".join([lines[0], *sample]) + "\n", encoding="utf-8")
shutil.copy(source / "test.tsv", here / "test.tsv")
