"""Pure fine-tuning library: configuration, data, models, training, evaluation.

It imports neither Prefect nor MLflow; `tasks/` and `flows/` wrap it.
"""

import logging

# A library's warnings go to the application's handlers (Prefect's, pytest's); with none configured, as
# in the command line, Python's last-resort printer stays silent: the commands print what they collect.
logging.getLogger(__name__).addHandler(logging.NullHandler())
