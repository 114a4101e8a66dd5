"""What users deploy, held to its promises: the Helm chart and the CloudFormation stacks.

Not part of the default test run (``tests/conftest.py`` leaves this folder out): the chart's tests
need the pinned helm, so ``.ci/check-helm`` runs ``test_helm_*.py`` after helm lint, and
``.ci/check-cloudformation`` runs ``test_cloudformation.py`` after cfn-lint (``make deploy-check``).
"""
