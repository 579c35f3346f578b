#!/usr/bin/env bash
# The P0 scenario of spec/lattice.md §8.4, driven by the real aws CLI v1 against Trellis
# (without the final curl through the data plane). Usage:
#   TRELLIS_ENDPOINT=http://127.0.0.1:7700 conformance/scenario.sh
# Exits non-zero on the first answer that is not what AWS would give.
set -euo pipefail

: "${TRELLIS_ENDPOINT:?set TRELLIS_ENDPOINT to the Trellis API URL, e.g. http://127.0.0.1:7700}"

export AWS_ACCESS_KEY_ID=AKIAEXAMPLE AWS_SECRET_ACCESS_KEY=secret AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL="$TRELLIS_ENDPOINT"
export AWS_MAX_ATTEMPTS=1 AWS_PAGER=""
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
# Keep a developer's own AWS configuration out of the way.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_VPC_LATTICE AWS_ENDPOINT_URL_EC2 || true

fail() { echo "scenario: FAIL: $*" >&2; exit 1; }
step() { echo "scenario: $*"; }
expect_id() { # expect_id <prefix> <value> <what>
  [[ "$2" =~ ^$1-[0-9a-f]{17}$ ]] || fail "$3: expected an id '$1-<17 hex>', got '$2'"
}
expect_eq() { # expect_eq <got> <want> <what>
  [[ "$1" == "$2" ]] || fail "$3: expected '$2', got '$1'"
}

command -v aws >/dev/null || fail "the aws CLI v1 is not on PATH (pip install -r conformance/requirements.txt)"
aws --version 2>&1 | grep -q '^aws-cli/1\.' || fail "need aws CLI v1, got: $(aws --version 2>&1)"

SUFFIX="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

step "create VPC"
VPC=$(aws ec2 create-vpc --cidr-block 10.0.0.0/16 --query Vpc.VpcId --output text)
expect_id vpc "$VPC" "ec2 create-vpc"

step "create service network"
SN=$(aws vpc-lattice create-service-network --name "demo-net-$SUFFIX" --query id --output text)
expect_id sn "$SN" "create-service-network"

step "associate VPC $VPC with $SN"
SNVA=$(aws vpc-lattice create-service-network-vpc-association --service-network-identifier "$SN" \
        --vpc-identifier "$VPC" --query id --output text)
expect_id snva "$SNVA" "create-service-network-vpc-association"

step "create service"
SVC=$(aws vpc-lattice create-service --name "web-$SUFFIX" --query id --output text)
expect_id svc "$SVC" "create-service"

step "create target group"
TG=$(aws vpc-lattice create-target-group --name "web-tg-$SUFFIX" --type IP \
      --config "{\"port\":8080,\"protocol\":\"HTTP\",\"vpcIdentifier\":\"$VPC\"}" --query id --output text)
expect_id tg "$TG" "create-target-group"

step "create listener (default port)"
LISTENER_OUT=$(aws vpc-lattice create-listener --service-identifier "$SVC" --name http-80 --protocol HTTP \
      --default-action "{\"forward\":{\"targetGroups\":[{\"targetGroupIdentifier\":\"$TG\"}]}}" \
      --query '[id, port, defaultAction.forward.targetGroups[0].weight]' --output text)
read -r LISTENER PORT WEIGHT <<<"$LISTENER_OUT"
expect_id listener "$LISTENER" "create-listener"
expect_eq "$PORT" "80" "create-listener default port"
expect_eq "$WEIGHT" "100" "create-listener default weight"

step "associate service with service network"
SNSA=$(aws vpc-lattice create-service-network-service-association --service-identifier "$SVC" \
        --service-network-identifier "$SN" --query id --output text)
expect_id snsa "$SNSA" "create-service-network-service-association"

step "register target"
REG=$(aws vpc-lattice register-targets --target-group-identifier "$TG" --targets id=10.0.1.23,port=8080 \
        --query '[successful[0].id, successful[0].port, length(unsuccessful || `[]`)]' --output text)
read -r REG_ID REG_PORT REG_BAD <<<"$REG"
expect_eq "$REG_ID" "10.0.1.23" "register-targets successful[0].id"
expect_eq "$REG_PORT" "8080" "register-targets successful[0].port"
expect_eq "$REG_BAD" "0" "register-targets unsuccessful count"

step "list targets"
TARGETS=$(aws vpc-lattice list-targets --target-group-identifier "$TG" --query 'items[].[id, port, status]' --output text)
grep -qE '^10\.0\.1\.23[[:space:]]+8080[[:space:]]+(INITIAL|HEALTHY|UNHEALTHY|UNAVAILABLE|UNUSED)$' <<<"$TARGETS" \
  || fail "list-targets does not show 10.0.1.23:8080 with a target status; got: $TARGETS"

step "get service"
DNS=$(aws vpc-lattice get-service --service-identifier "$SVC" --query dnsEntry.domainName --output text)
[[ "$DNS" == "web-$SUFFIX-${SVC#svc-}."*".vpc-lattice-svcs.us-east-1.on.aws" ]] \
  || fail "get-service dnsEntry.domainName '$DNS' is not web-$SUFFIX-<id>.<label>.vpc-lattice-svcs.us-east-1.on.aws"
[[ "$DNS" == *.on.aws ]] || fail "dnsEntry.domainName '$DNS' does not end with .on.aws"

step "wait for ACTIVE"
STATUS="" SNSA_STATUS=""
for _ in $(seq 1 20); do
  STATUS=$(aws vpc-lattice get-service --service-identifier "$SVC" --query status --output text)
  SNSA_STATUS=$(aws vpc-lattice get-service-network-service-association \
                 --service-network-service-association-identifier "$SNSA" --query status --output text)
  [[ "$STATUS" == "ACTIVE" && "$SNSA_STATUS" == "ACTIVE" ]] && break
  sleep 0.2
done
expect_eq "$STATUS" "ACTIVE" "get-service status"
expect_eq "$SNSA_STATUS" "ACTIVE" "get-service-network-service-association status"

step "list with CLI auto-pagination (page size 1)"
ALL=$(aws vpc-lattice list-services --page-size 1 --query 'items[].id' --output text)
grep -qw -- "$SVC" <<<"$ALL" || fail "list-services --page-size 1 did not reach $SVC"
NETS=$(aws vpc-lattice list-service-network-vpc-associations --service-network-identifier "$SN" \
        --query 'items[].vpcId' --output text)
expect_eq "$NETS" "$VPC" "list-service-network-vpc-associations vpcId"

step "errors surface as AWS errors"
if ERR=$(aws vpc-lattice get-service --service-identifier svc-0123456789abcdef0 2>&1); then
  fail "get-service of an unknown id succeeded: $ERR"
fi
grep -q 'ResourceNotFoundException' <<<"$ERR" || fail "unknown service should be ResourceNotFoundException: $ERR"

step "serve a real target and reach it through the proxy"
TRELLIS=${TRELLIS_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/trellis}
WEB_DIR=$(mktemp -d)
echo "hello from the target" > "$WEB_DIR/index.html"
WEB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$WEB_PORT" --bind 127.0.0.1 --directory "$WEB_DIR" >/dev/null 2>&1 &
WEB_PID=$!
trap 'kill "$WEB_PID" 2>/dev/null; rm -rf "$WEB_DIR"' EXIT
aws vpc-lattice register-targets --target-group-identifier "$TG" --targets "id=127.0.0.1,port=$WEB_PORT" >/dev/null
INGRESS=$("$TRELLIS" vpc ingress "$VPC" --endpoint "$TRELLIS_ENDPOINT" 2>/dev/null)
[[ "$INGRESS" == 127.* ]] || fail "trellis vpc ingress $VPC printed '$INGRESS', not a loopback address"
OFFSET=$(curl -s "$TRELLIS_ENDPOINT/_trellis/vpcs/$VPC/ingress" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lowPortOffset"])')
PORT=$((80 + OFFSET))
BODY=""
for _ in $(seq 1 50); do
  BODY=$(curl -s -m 5 --resolve "$DNS:$PORT:$INGRESS" "http://$DNS:$PORT/") && [[ "$BODY" == "hello from the target" ]] && break
  sleep 0.1
done
expect_eq "$BODY" "hello from the target" "curl http://$DNS/ through the proxy"
if NONE=$("$TRELLIS" vpc ingress vpc-0123456789abcdef0 --endpoint "$TRELLIS_ENDPOINT" 2>&1); then
  fail "trellis vpc ingress of an unassociated VPC succeeded: $NONE"
fi

step "ECS: a service of tasks that register themselves into a Lattice target group"
ROLE_NAME="ecsInfra-$SUFFIX"
ROLE=$(aws iam create-role --role-name "$ROLE_NAME" --query Role.Arn --output text \
        --assume-role-policy-document '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}]}')
aws iam attach-role-policy --role-name "$ROLE_NAME" \
    --policy-arn arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForVpcLattice
SUBNET=$(aws ec2 create-subnet --vpc-id "$VPC" --cidr-block 10.0.7.0/24 --query Subnet.SubnetId --output text)
SG=$(aws ec2 describe-security-groups --filters "Name=vpc-id,Values=$VPC" --query 'SecurityGroups[0].GroupId' --output text)
TG2_ARN=$(aws vpc-lattice create-target-group --name "echo-tg-$SUFFIX" --type IP \
      --config "{\"port\":8080,\"protocol\":\"HTTP\",\"vpcIdentifier\":\"$VPC\"}" --query arn --output text)
SVC2=$(aws vpc-lattice create-service --name "echo-$SUFFIX" --query id --output text)
DNS2=$(aws vpc-lattice get-service --service-identifier "$SVC2" --query dnsEntry.domainName --output text)
aws vpc-lattice create-listener --service-identifier "$SVC2" --name http-80 --protocol HTTP \
      --default-action "{\"forward\":{\"targetGroups\":[{\"targetGroupIdentifier\":\"$TG2_ARN\"}]}}" >/dev/null
aws vpc-lattice create-service-network-service-association --service-identifier "$SVC2" \
      --service-network-identifier "$SN" >/dev/null
CLUSTER="scenario-$SUFFIX"
aws ecs create-cluster --cluster-name "$CLUSTER" >/dev/null
aws ecs register-task-definition --family "echo-$SUFFIX" --network-mode awsvpc --requires-compatibilities FARGATE \
    --cpu 256 --memory 512 --container-definitions \
    '[{"name":"echo","image":"trellis/echo:latest","portMappings":[{"containerPort":8080,"name":"http"}]}]' >/dev/null
aws ecs create-service --cluster "$CLUSTER" --service-name echo --task-definition "echo-$SUFFIX" --desired-count 1 \
    --launch-type FARGATE \
    --network-configuration "awsvpcConfiguration={subnets=[$SUBNET],securityGroups=[$SG]}" \
    --vpc-lattice-configurations "roleArn=$ROLE,targetGroupArn=$TG2_ARN,portName=http" >/dev/null
ECHO=""
for _ in $(seq 1 100); do
  ECHO=$(curl -s -m 5 --resolve "$DNS2:$PORT:$INGRESS" "http://$DNS2:$PORT/from-the-cli") && [[ "$ECHO" == *'"task":"arn:aws:ecs:'* ]] && break
  sleep 0.1
done
[[ "$ECHO" == *'"path":"/from-the-cli"'* ]] || fail "the ECS task did not answer through the proxy: $ECHO"
RUNNING=$(aws ecs describe-services --cluster "$CLUSTER" --services echo --query 'services[0].runningCount' --output text)
expect_eq "$RUNNING" "1" "describe-services runningCount"
TARGET=$(aws vpc-lattice list-targets --target-group-identifier "$TG2_ARN" --query 'items[0].id' --output text)
TASK_IP=$(aws ecs describe-tasks --cluster "$CLUSTER" --tasks "$(aws ecs list-tasks --cluster "$CLUSTER" --query 'taskArns[0]' --output text)" \
          --query "tasks[0].attachments[0].details[?name=='privateIPv4Address'].value | [0]" --output text)
expect_eq "$TARGET" "$TASK_IP" "the registered target is the task's address"
aws ecs delete-service --cluster "$CLUSTER" --service echo --force >/dev/null
for _ in $(seq 1 100); do
  LEFT=$(aws vpc-lattice list-targets --target-group-identifier "$TG2_ARN" --query 'length(items)' --output text)
  [[ "$LEFT" == "0" ]] && break
  sleep 0.2
done
expect_eq "$LEFT" "0" "targets left after delete-service"

echo "scenario: OK (service $SVC at $DNS)"
