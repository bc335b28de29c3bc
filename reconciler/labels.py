"""Label and annotation keys the reconciler puts on everything it owns.

They are how the reconciler (and a person with kubectl, or the Argo UI) finds a model's objects:
`kubectl get deploy -l gitops.ml/model=iris-classifier`.
"""

DOMAIN = "gitops.ml"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "model-gitops-reconciler"  # also the server-side apply field manager
NAME = "app.kubernetes.io/name"
MODEL = f"{DOMAIN}/model"
ENVIRONMENT = f"{DOMAIN}/environment"
POOL = f"{DOMAIN}/pool"
ACCELERATOR = f"{DOMAIN}/accelerator"
TRACK = f"{DOMAIN}/track"  # stable | canary
CONTENT_HASH = f"{DOMAIN}/content-hash"  # annotation: hash of the rendered object
MODEL_HASH = f"{DOMAIN}/model-hash"  # annotation: content hash of the model's sources (code, bentofile, DVC md5s)
GIT_COMMIT = f"{DOMAIN}/git-commit"  # annotation
WEIGHTS_MD5 = f"{DOMAIN}/weights-md5"  # pod annotation: the DVC md5s of the weights (as X-Model-Version says)
