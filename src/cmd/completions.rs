//! `qlarius-env completions` and `qlarius-env man`: shell completion scripts and manual
//! pages generated from the clap definitions, so they never drift from the options.

use crate::cli::Cli;
use crate::error::Error;
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::path::PathBuf;

const COMPLETIONS_HELP: &str = "\
Examples:
   qlarius-env completions bash > /etc/bash_completion.d/qlarius-env
   qlarius-env completions zsh > \"${fpath[1]}/_qlarius-env\"
   qlarius-env completions fish > ~/.config/fish/completions/qlarius-env.fish";

const MAN_HELP: &str = "\
Without --dir, prints the page for qlarius-env itself (roff) on standard output. With
--dir, writes qlarius-env.1 and one page per operator command (qlarius-env-check.1 and
so on) into the directory.

Examples:
   qlarius-env man | man -l -
   qlarius-env man --dir /usr/local/share/man/man1";

/// Print a shell completion script.
#[derive(Debug, Args)]
#[command(after_help = COMPLETIONS_HELP)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Print or write the manual pages.
#[derive(Debug, Args)]
#[command(after_help = MAN_HELP)]
pub struct ManArgs {
    /// Directory to write every page into, instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run_completions(args: CompletionsArgs) -> Result<(), Error> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "qlarius-env", &mut script);
    super::write_stdout(&String::from_utf8_lossy(&script))
}

pub fn run_man(args: ManArgs) -> Result<(), Error> {
    let command = Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| {
                Error::Usage(format!("cannot create {}: {e}", dir.display()))
            })?;
            clap_mangen::generate_to(command, &dir)
                .map_err(|e| Error::Usage(format!("cannot write the manual pages to {}: {e}", dir.display())))
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| Error::Internal(format!("cannot render the manual page: {e}")))?;
            super::write_stdout(&String::from_utf8_lossy(&page))
        }
    }
}
