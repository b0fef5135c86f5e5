//! Where a request went: what the router hands back to the connection's
//! loop (a reply to write, or why there is none). Shared by the router and
//! every transport, so it sits below them all.

use super::response::Response;
use crate::hub::OpenPoll;

/// Where a request went.
pub enum Routed {
    /// A reply to write; `poll` keeps a poll counted until it is written.
    Reply {
        response: Response,
        poll: Option<OpenPoll>,
    },
    /// The client closed its side while its poll waited: nothing to write.
    ClientLeft,
    /// A stream was written and ended: the connection closes.
    Streamed,
    /// The socket was handed over (`Connection::hand_over`, a WebSocket
    /// after its `101`): the loop ends, and the session runs on its own.
    Upgraded,
    /// A last reply, after which the connection closes (a request body
    /// that could not be read).
    Close(Response),
}

impl From<Response> for Routed {
    fn from(response: Response) -> Self {
        Routed::Reply {
            response,
            poll: None,
        }
    }
}
