"""The IAM roles of a SAM template's functions, as SAM itself builds them.

Reads a SAM template (YAML or JSON) on stdin and runs it through aws-sam-translator (pinned in
tools/requirements-emulator.txt, the version the pinned SAM CLI uses), so policy templates
such as DynamoDBWritePolicy expand from SAM's own published definitions, event sources add
the permissions and managed policies SAM adds for them, and inline statements pass through as
SAM writes them. Prints JSON on stdout:

    {"translator": "<version>",
     "functions": {"<function logical id>": <its Role property: {"Fn::GetAtt": [...]}, or an ARN>},
     "resources": {"<logical id>": <every AWS::IAM::Role, AWS::IAM::Policy and
                                   AWS::IAM::ManagedPolicy of the transformed template>}}

Intrinsics (Ref, Fn::Sub, Fn::GetAtt, ...) are left for the local stack to resolve against
the resources it created. Managed policies are named by ARN; their documents are not shipped
with the translator (tools/local-stack/managed-policies.json holds those that matter).
"""

import json
import sys

import samtranslator
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

# The managed policies SAM attaches by name (everything else is referenced by ARN).
MANAGED_POLICY_ARNS = {
    "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "AWSLambdaSQSQueueExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
    "AWSXRayDaemonWriteAccess": "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess",
}

IAM_TYPES = ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")


class ManagedPolicies:
    def load(self):
        return MANAGED_POLICY_ARNS


def main():
    template = yaml_parse(sys.stdin.read())
    # SAM needs a deployable CodeUri to translate a function; what the code is does not change
    # its role.
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://local-stack/placeholder.zip"
    transformed = transform(template, {}, ManagedPolicies())
    resources = transformed["Resources"]
    print(
        json.dumps(
            {
                "translator": samtranslator.__version__,
                "functions": {
                    logical_id: resource["Properties"].get("Role")
                    for logical_id, resource in resources.items()
                    if resource["Type"] == "AWS::Lambda::Function"
                },
                "resources": {
                    logical_id: resource for logical_id, resource in resources.items() if resource["Type"] in IAM_TYPES
                },
            }
        )
    )


if __name__ == "__main__":
    main()
