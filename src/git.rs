//! git over SSH: the app's bare repository lives in its gear, and git-receive-pack /
//! git-upload-pack run inside the gear as the gear's uid, within its limits.

use crate::auth::Actor;
use crate::node::Node;
use anyhow::Result;

/// Which git service the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitService {
    ReceivePack,
    UploadPack,
}

/// Serves `service` for `app` on the caller's stdio (the SSH channel) and returns its exit code.
/// A push to the deploy branch builds and deploys before git accepts the ref.
pub fn serve(_node: &Node, _actor: &Actor, _app: &str, _service: GitService) -> Result<i32> {
    todo!("git push deploys")
}
