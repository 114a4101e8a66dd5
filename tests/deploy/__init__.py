"""What users deploy, held to its promises: the CloudFormation stacks.

Not part of the default test run (``tests/conftest.py`` leaves this folder out):
``.ci/check-cloudformation`` runs ``test_cloudformation.py`` after cfn-lint (``make deploy-check``).
"""
