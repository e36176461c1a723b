//! What clap generates from the command line's own definition: shell completions
//! (`nodeos-vm completions bash|zsh|fish|elvish|powershell`) and the man page (`nodeos-vm man`,
//! roff on stdout, every subcommand in it).

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    ///
    /// Example: nodeos-vm completions bash > /etc/bash_completion.d/nodeos-vm
    shell: Shell,
}

/// The command line as users see it: the internal (hidden) subcommands left out, which the
/// generators would otherwise offer.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut public = clap::Command::new("nodeos-vm")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(full.get_version().map(str::to_string).unwrap_or_default())
        .subcommand_required(true);
    for arg in full.get_arguments() {
        public = public.arg(arg.clone());
    }
    public.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = public_command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "nodeos-vm", &mut script);
    print(&script)
}

/// The man page of `nodeos-vm` and, after it, one section per subcommand.
pub fn man() -> anyhow::Result<()> {
    let command = public_command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("nodeos-vm-{}", sub.get_name());
        let sub = sub.clone().name(name.clone()).bin_name(name);
        clap_mangen::Man::new(sub).render(&mut page)?;
    }
    print(&page)
}

/// Writes `text` to stdout; a reader that stopped reading (`| head`) is no error.
fn print(text: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
