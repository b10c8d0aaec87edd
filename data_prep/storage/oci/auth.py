"""OCI credentials, chosen as the OCI CLI chooses them, as (config, signer) for the SDK.

    OCI_CLI_AUTH      api_key (default) | instance_principal | resource_principal | security_token
                      | instance_obo_user (an instance principal acting for a user with a
                      delegation token: what OCI Data Flow gives a run; the OCI CLI's name)
    OCI_DELEGATION_TOKEN_FILE  the delegation token for instance_obo_user (on Data Flow: the
                      path in Spark's spark.hadoop.fs.oci.client.auth.delegationTokenPath)
    OCI_CONFIG_FILE   config file for api_key / security_token (~/.oci/config)
    OCI_CLI_PROFILE   profile in that file (DEFAULT)
    OCI_CLI_REGION    region, overriding the profile's or the principal's
    OCI_OBJECT_STORAGE_ENDPOINT  endpoint override: a private endpoint, or the local store

Every failure is a CredentialsError: one line that names the file, profile or variable to
fix, never the secret itself.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from data_prep.storage.base import RemoteError

ENDPOINT_ENV = 'OCI_OBJECT_STORAGE_ENDPOINT'
AUTH_MODES = ('api_key', 'instance_principal', 'resource_principal', 'security_token',
              'instance_obo_user')
TOKEN_FILE_ENV = 'OCI_DELEGATION_TOKEN_FILE'


class CredentialsError(RemoteError):
    """Missing or broken OCI credentials; the message is one line and holds no secret."""


class Settings(NamedTuple):
    auth: str
    config_file: str
    profile: str
    region: str
    endpoint: str
    delegation_token_file: str = ''


def settings() -> Settings:
    return Settings(os.environ.get('OCI_CLI_AUTH') or 'api_key',
                     os.path.expanduser(os.environ.get('OCI_CONFIG_FILE') or '~/.oci/config'),
                     os.environ.get('OCI_CLI_PROFILE') or 'DEFAULT',
                     os.environ.get('OCI_CLI_REGION') or '',
                     (os.environ.get(ENDPOINT_ENV) or '').rstrip('/'),
                     os.path.expanduser(os.environ.get(TOKEN_FILE_ENV) or ''))


def _config_file(s: Settings) -> dict:
    import oci
    if not os.path.isfile(s.config_file):
        raise CredentialsError(
            f'OCI credentials: config file {s.config_file} not found (set OCI_CONFIG_FILE, '
            f'or OCI_CLI_AUTH=instance_principal on an OCI instance)')
    try:
        return oci.config.from_file(s.config_file, s.profile)
    except oci.exceptions.ProfileNotFound:
        raise CredentialsError(f'OCI credentials: profile [{s.profile}] not found in '
                               f'{s.config_file} (set OCI_CLI_PROFILE)')
    except oci.exceptions.InvalidKeyFilePath as e:  # its message names the file, no secret
        raise CredentialsError('OCI credentials: ' + str(e).split('. For more info')[0])
    except Exception as e:  # parse errors: name the file, never echo its contents
        raise CredentialsError(f'OCI credentials: cannot read {s.config_file}: '
                               f'{type(e).__name__}')


def _key_file(s: Settings, config: dict) -> str:
    path = os.path.expanduser(config.get('key_file') or '')
    if not path:
        raise CredentialsError(f'OCI credentials: key_file missing in profile [{s.profile}] '
                               f'of {s.config_file}')
    if not os.path.isfile(path):
        raise CredentialsError(f'OCI credentials: key_file {path} (profile [{s.profile}] of '
                               f'{s.config_file}) does not exist')
    return path


def make_signer(s: Settings) -> tuple[dict, object]:
    """(config, signer) for the auth mode, the way the OCI CLI picks it."""
    import oci
    if s.auth == 'api_key':
        config = _config_file(s)
        try:
            oci.config.validate_config(config)
        except oci.exceptions.InvalidConfig as e:
            problems = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
            what = ', '.join(f'{k} {v}' for k, v in sorted(problems.items())) or 'invalid'
            raise CredentialsError(f'OCI credentials: profile [{s.profile}] of {s.config_file}: '
                                   f'{what}')
        key = _key_file(s, config)
        try:
            signer = oci.signer.Signer(config['tenancy'], config['user'], config['fingerprint'],
                                       key, config.get('pass_phrase'))
        except Exception as e:
            raise CredentialsError(f'OCI credentials: cannot load the API key {key} '
                                   f'(wrong pass_phrase or not a PEM key): {type(e).__name__}')
        return config, signer
    if s.auth == 'security_token':
        config = _config_file(s)
        token_file = os.path.expanduser(config.get('security_token_file') or '')
        if not token_file or not os.path.isfile(token_file):
            raise CredentialsError(
                f'OCI credentials: security_token_file {token_file or "(not set)"} of profile '
                f'[{s.profile}] in {s.config_file} missing (run `oci session authenticate`)')
        key = _key_file(s, config)
        try:
            private_key = oci.signer.load_private_key_from_file(key, config.get('pass_phrase'))
        except Exception as e:
            raise CredentialsError(f'OCI credentials: cannot load the session key {key}: '
                                   f'{type(e).__name__}')
        with open(token_file) as f:
            token = f.read().strip()
        return config, oci.auth.signers.SecurityTokenSigner(token, private_key)
    if s.auth == 'instance_principal':
        try:
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
        except Exception as e:
            raise CredentialsError(
                f'OCI credentials: OCI_CLI_AUTH=instance_principal but no instance principal '
                f'token (not on an OCI instance, or not in a dynamic group): {type(e).__name__}')
        return {'region': signer.region}, signer
    if s.auth == 'resource_principal':
        if not os.environ.get('OCI_RESOURCE_PRINCIPAL_VERSION'):
            raise CredentialsError('OCI credentials: OCI_CLI_AUTH=resource_principal but '
                                   'OCI_RESOURCE_PRINCIPAL_VERSION is not set')
        try:
            signer = oci.auth.signers.get_resource_principals_signer()
        except Exception as e:
            raise CredentialsError(f'OCI credentials: resource principal unusable '
                                   f'(check the OCI_RESOURCE_PRINCIPAL_* variables): '
                                   f'{type(e).__name__}')
        return {'region': signer.region}, signer
    if s.auth == 'instance_obo_user':
        if not s.delegation_token_file or not os.path.isfile(s.delegation_token_file):
            raise CredentialsError(
                f'OCI credentials: OCI_CLI_AUTH=instance_obo_user needs the delegation token '
                f'file in {TOKEN_FILE_ENV} ({s.delegation_token_file or "not set"}: missing)')
        with open(s.delegation_token_file) as f:
            token = f.read().strip()
        try:
            signer = oci.auth.signers.InstancePrincipalsDelegationTokenSigner(
                delegation_token=token)
        except Exception as e:
            raise CredentialsError(
                f'OCI credentials: OCI_CLI_AUTH=instance_obo_user but no instance principal '
                f'to act with the delegation token (not on an OCI instance, e.g. a Data Flow '
                f'node): {type(e).__name__}')
        return {'region': signer.region}, signer
    raise CredentialsError(f'OCI credentials: OCI_CLI_AUTH={s.auth!r} is not one of '
                           f'{", ".join(AUTH_MODES)}')


