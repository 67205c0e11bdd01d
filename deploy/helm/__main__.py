"""`python -m deploy.helm` from the project folder: the values of Dagster's Helm chart and a
Secret template per organisation, from ORGANISATIONS_FILE (see resources/helm.py and the README,
"On Kubernetes (Dagster's Helm chart)")."""

import sys

from resources.helm import main

sys.exit(main())
