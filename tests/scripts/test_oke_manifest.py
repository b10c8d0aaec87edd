"""scripts/oke/pytorchjob.yaml is a PyTorchJob that the Kubernetes API server and the Kubeflow
training-operator accept, whose pods ask for what a BM.GPU.H100.8 node gives (8 GPUs, the RDMA
network, the NVMe), and whose command is training.launch with a job it accepts.

No cluster here: the manifest is checked against the PyTorchJob CRD's own schema (vendored in
tests/data/kubeflow/, source named there) with unknown fields refused, as `kubectl apply`'s
default strict field validation does, and against the operator's admission rules."""
import copy
import json
import re

import jsonschema
import pytest
import yaml

from tests.helpers import ROOT
from tests.training.schedulers import pytorchjob_pod
from training import launch
from training.config import load_config

MANIFEST = ROOT / 'scripts/oke/pytorchjob.yaml'
CRD = json.loads((ROOT / 'tests/data/kubeflow/pytorchjob_v1.schema.json').read_text())


def strict(schema):
    """The schema with unknown fields refused wherever it lists an object's fields, as the API
    server's strict field validation does (fields under x-kubernetes-preserve-unknown-fields,
    or a map's additionalProperties, stay open)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k == 'properties' else strict(v)) for k, v in schema.items()}
    if 'properties' in schema:
        out['properties'] = {name: strict(s) for name, s in schema['properties'].items()}
        if 'additionalProperties' not in schema and \
                not schema.get('x-kubernetes-preserve-unknown-fields'):
            out['additionalProperties'] = False
    return out


VALIDATOR = jsonschema.Draft7Validator(strict(CRD['openAPIV3Schema']))


def schema_errors(doc: dict) -> list[str]:
    return sorted(f'{"/".join(map(str, e.absolute_path))}: {e.message}'
                  for e in VALIDATOR.iter_errors(doc))


def admission_errors(doc: dict) -> list[str]:
    """The training-operator's webhook (v1.9, pkg/webhooks/pytorch/pytorchjob_webhook.go)."""
    errors = []
    name = doc['metadata']['name']
    if not (len(name) <= 63 and re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', name)):
        errors.append(f'metadata.name {name!r} is not a DNS-1035 label')
    for role, spec in doc['spec']['pytorchReplicaSpecs'].items():
        if role not in ('Master', 'Worker'):
            errors.append(f'replica type {role} is neither Master nor Worker')
        containers = spec['template']['spec']['containers']
        if not any(c['name'] == 'pytorch' for c in containers):
            errors.append(f'{role}: no container named pytorch')
        errors += [f'{role}: container {c["name"]} has no image' for c in containers
                   if not c.get('image')]
        if role == 'Master' and spec.get('replicas') != 1:
            errors.append('Master replicas must be 1')
        if role == 'Worker' and spec.get('replicas', 1) < 1:
            errors.append('Worker replicas must be at least 1')
    return errors


@pytest.fixture
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def pods_of(doc: dict):
    for role, spec in doc['spec']['pytorchReplicaSpecs'].items():
        pod = spec['template']['spec']
        yield role, pod, next(c for c in pod['containers'] if c['name'] == 'pytorch')


def test_the_manifest_is_a_pytorchjob_the_api_server_and_the_operator_accept(manifest):
    assert manifest['apiVersion'] == f'{CRD["group"]}/{CRD["version"]}' == 'kubeflow.org/v1'
    assert manifest['kind'] == CRD['kind'] == 'PyTorchJob'
    assert schema_errors(manifest) == []
    assert admission_errors(manifest) == []
    assert {r: s['restartPolicy'] for r, s in manifest['spec']['pytorchReplicaSpecs'].items()} \
        == {'Master': 'OnFailure', 'Worker': 'OnFailure'}  # failed pods restart: autoresume
    assert manifest['spec']['runPolicy']['backoffLimit'] >= 2 * 3  # 3 failures of 2 pods


def test_the_check_refuses_what_kubectl_apply_would(manifest):
    """Not vacuous: a misspelt field, a wrong type, a missing required field, a third role."""
    bad = copy.deepcopy(manifest)
    worker = bad['spec']['pytorchReplicaSpecs']['Worker']
    worker['template']['spec']['containers'][0]['resource'] = {'limits': {}}
    worker['replicas'] = 'two'
    del worker['template']['spec']['volumes'][0]['name']
    errors = schema_errors(bad)
    assert ("spec/pytorchReplicaSpecs/Worker/template/spec/containers/0: Additional properties "
            "are not allowed ('resource' was unexpected)") in errors
    assert "spec/pytorchReplicaSpecs/Worker/replicas: 'two' is not of type 'integer'" in errors
    assert ("spec/pytorchReplicaSpecs/Worker/template/spec/volumes/0: 'name' is a required "
            "property") in errors
    # The operator's rules apply to what passed the schema: a role it does not know.
    third = copy.deepcopy(manifest)
    third['spec']['pytorchReplicaSpecs']['Chief'] = third['spec']['pytorchReplicaSpecs']['Worker']
    assert schema_errors(third) == []
    assert admission_errors(third) == ['replica type Chief is neither Master nor Worker']


def test_every_pod_asks_for_8_gpus_the_rdma_network_and_the_nvme(manifest):
    cache = load_config(str(ROOT / 'yamls/c4_zstd.yaml'), []).variables.data_local
    for role, pod, container in pods_of(manifest):
        assert container['resources']['limits']['nvidia.com/gpu'] == 8, role
        assert pod['nodeSelector'] == {'node.kubernetes.io/instance-type': 'BM.GPU.H100.8'}
        # RDMA on OKE as Oracle's guide sets it: the host's network and its RDMA devices.
        assert pod['hostNetwork'] is True and pod['dnsPolicy'] == 'ClusterFirstWithHostNet'
        assert 'IPC_LOCK' in container['securityContext']['capabilities']['add']
        volumes = {v['name']: v for v in pod['volumes']}
        mounts = {m['mountPath']: volumes[m['name']] for m in container['volumeMounts']}
        assert mounts['/dev/infiniband']['hostPath']['path'] == '/dev/infiniband'
        assert mounts['/dev/shm']['emptyDir']['medium'] == 'Memory'
        # The recipe's shard cache is on a mount of the node's NVMe (OKE's RAID: /mnt/nvme).
        local = next(path for path in mounts if cache.startswith(path + '/'))
        assert mounts[local]['hostPath']['path'].startswith('/mnt/nvme/'), mounts[local]
        assert {e['name']: e['value'] for e in container['env']}['OCI_CLI_AUTH'] == \
            'instance_principal'


def test_the_pods_run_the_translation_and_it_accepts_the_job(manifest):
    """The command is training.launch with flags it knows and a recipe that is there; with the
    variables the operator gives each pod and the 8 GPUs each asks for, every pod finds its
    rank, the master service and a world the recipe accepts."""
    pods = sum(spec['replicas'] for spec in manifest['spec']['pytorchReplicaSpecs'].values())
    commands = {tuple(c['command'] + c.get('args', [])) for _, _, c in pods_of(manifest)}
    assert len(commands) == 1  # every node runs the same recipe with the same overrides
    command = list(commands.pop())
    assert command[:3] == ['python', '-m', 'training.launch']
    args = launch.parse_args(command[3:])
    assert (ROOT / args.recipe).is_file() and args.shape == 'BM.GPU.H100.8'
    assert 'variables.bucket=oci://BUCKET@NAMESPACE' in args.overrides  # the value to change
    cfg = load_config(str(ROOT / args.recipe), args.overrides)
    master = f'{manifest["metadata"]["name"]}-master-0'
    for rank in range(pods):
        node = launch.find_node(args, pytorchjob_pod(pods, rank, MASTER_ADDR=master))
        assert (node.rank, node.nodes, node.master_addr, node.master_port) == \
            (rank, pods, master, 23456)
        launch.check_recipe(cfg, node.nodes, node.nodes * 8, args.recipe)
    added, kept = launch.nccl_settings(args.shape, {})
    assert added == launch.NCCL_BY_SHAPE['BM.GPU.H100.8'] and kept == []
