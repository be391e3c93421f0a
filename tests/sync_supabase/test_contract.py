"""The shared Remote contract, run against SupabaseRemote on the local Supabase stack."""

from __future__ import annotations

import pytest

from sync.localcloud.stack import LocalCloud
from sync.remote import Remote
from sync.supabase_remote import SupabaseRemote
from tests.sync_contract.contract import RemoteContract

from .conftest import Homes, new_email, poison_meta


class SupabaseFactory:
    """One fresh user per label per test; every remote is a separate home (device)."""

    def __init__(self, cloud: LocalCloud, homes: Homes) -> None:
        self.cloud = cloud
        self.homes = homes
        self.emails: dict[str, str] = {}

    def make_remote(self, user_label: str) -> Remote:
        email = self.emails.setdefault(user_label, new_email())
        _, remote = self.homes.device(self.cloud.url, self.cloud.anon_key, email, label=user_label)
        return remote

    def purge(self, remote: Remote) -> int:
        assert isinstance(remote, SupabaseRemote)
        return remote.purge_tombstones("0 seconds")

    def poison_meta(self, remote: Remote, row_id: str, kind: str) -> None:
        poison_meta(self.cloud, row_id, kind)


@pytest.fixture
def remote_factory(cloud: LocalCloud, homes: Homes) -> SupabaseFactory:
    return SupabaseFactory(cloud, homes)


class TestSupabaseRemoteContract(RemoteContract):
    """The contract over PostgREST RPC, GoTrue sessions and Realtime hints."""

    concurrent_writers = 3
    changes_per_writer = 10
